"""What sslax's commands share: one-line errors with exit code 2, and the --config flag.

Every command (``python -m sslax.train``, ``sslax.plan``, ``sslax.data.preview``) reads a config
file with ``--config.FIELD=VALUE`` overrides; a bad flag, override or config file is one line
naming the command, and exit code 2, before anything runs.
"""

from __future__ import annotations

import sys

__all__ = ["define_config_flag", "fail", "flags_parser"]


def fail(command: str, message, code: int = 2) -> None:
    """Ends the program: ``<command>: error: <message on one line>`` and ``code``."""
    print(f"{command}: error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(code)


def define_config_flag(command: str, default: str):
    """The locked ``--config`` flag of a command; a bad override in argv fails in one line.

    ml_collections loads the file and applies the overrides right here, when the flag is
    defined, so their errors surface as exceptions of this call.
    """
    from ml_collections import config_flags

    try:
        return config_flags.DEFINE_config_file(
            "config", default, "Config file (a get_config() module).", lock_config=True
        )
    except (KeyError, AttributeError) as e:
        field = str(e).strip("\"'")
        fail(command, f"unknown config field {field!r} in a --config.{field} override")
    except Exception as e:
        fail(command, e)


def flags_parser(command: str):
    """absl's flag parsing for ``app.run``, with any flag or override error on one line."""
    from absl import flags

    def parse(argv: list[str]) -> list[str]:
        try:
            return flags.FLAGS(argv)
        except Exception as e:  # flags.Error, and the KeyError/TypeError of config overrides
            message = str(e)
            if "Traceback" in message:
                # A config file's get_config() raised: ml_collections wraps the whole traceback
                # into the flag error; its last line is the exception that says what is wrong.
                head = message.split("Traceback")[0].strip()
                last = [line for line in message.splitlines() if line.strip()][-1].strip()
                message = f"{head} {last}"
            fail(command, message)

    return parse
