#!/usr/bin/env bash
# sslax pretraining on a Cloud TPU VM slice or pod: the same command on every worker, one run.
#
#   launch/tpu_pod.sh TPU_NAME ZONE [--project=P] -- TRAIN_FLAGS...
#   launch/tpu_pod.sh TPU_NAME ZONE [--project=P] --sweep=experiments/simclr_table_b1.py \
#       --root=gs://BUCKET/PATH [-- EXTRA_TRAIN_FLAGS...]
#
# e.g. launch/tpu_pod.sh my-v4-64 us-central2-b -- \
#          --config=experiments/configs/simclr_imagenet.py --workdir=gs://my-bucket/runs/simclr
#      SSLAX_BUCKET=my-bucket launch/tpu_pod.sh my-v4-64 us-central2-b -- \
#          --config=experiments/configs/simclr_imagenet.py
#
# Two steps, each one `gcloud compute tpus tpu-vm ssh TPU_NAME --zone=ZONE --worker=all
# --command=...`: (1) setup on every worker: clone or update the repository at SSLAX_REPO, check
# out SSLAX_REF, make a virtual environment and `pip install "jax[tpu]" -e .` into it (SETUP=0
# skips this step); (2) `python -m sslax.train --distributed=on TRAIN_FLAGS` on every worker,
# JAX finding the other workers from the TPU metadata. Each worker appends its output to
# ~/sslax-logs/worker-HOSTNAME.log on itself and streams it back here, each line prefixed with
# [HOSTNAME]. With --sweep, the sweep's cells (`python SWEEP list --root=ROOT`, read here) run
# one after another, EXTRA_TRAIN_FLAGS appended to each; START=N begins at cell N.
#
# The workdir is on object storage, gs://BUCKET/PATH: a pod's workers have small local disks that
# live only as long as the VMs, and share no filesystem by default. Every worker reads and writes
# its checkpoints and worker 0 writes the logs and results.json there; the workers' service account
# needs read and write access to the bucket. Without --workdir in TRAIN_FLAGS, the run gets
# gs://$SSLAX_BUCKET/runs/CONFIG-YYYYMMDD-HHMMSS (CONFIG: the --config file's name, default simclr;
# the time in UTC), printed before anything starts; with no SSLAX_BUCKET either, the script stops. A
# local workdir is refused, since each worker would write its own disk, unless SHARED_WORKDIR=1 says
# that it is an absolute path on a mount every worker shares (Filestore, gcsfuse). A sweep's ROOT is
# checked the same way; its cells' workdirs are ROOT/CELL.
#
# When a worker dies, the others exit by themselves within --distributed_timeout_s seconds
# (default 100) with a line naming the lost process and the step to resume from. On a preemption
# notice (SIGTERM) all workers save the same step and exit 0. Either way, running the same
# command again (with the printed --workdir where the script made one up) resumes from the newest
# checkpoint that every worker finished. An interrupted ssh session ends the run on the workers,
# so launch long runs from tmux or screen. A failed cell stops a sweep; START=N resumes it.
# gcloud wants `ssh-add ~/.ssh/google_compute_engine` first when it reaches all workers at once.
#
# Environment:
#   SSLAX_REPO     git URL the workers clone (default: this checkout's `origin` remote)
#   SSLAX_REF      commit, branch or tag to run (default: this checkout's HEAD commit, which must
#                  be pushed to SSLAX_REPO)
#   SSLAX_REMOTE_DIR, SSLAX_REMOTE_VENV  on the workers, relative to home (default: sslax,
#                  sslax-venv)
#   SSLAX_PYTHON   interpreter for the venv on the workers (default: python3 if >= 3.11, else
#                  python3.11, installed with apt when missing)
#   SSLAX_JAX      the JAX requirement to install (default: jax[tpu])
#   SETUP=0        skip step (1)
#   GCLOUD         gcloud executable (default: gcloud); GCLOUD_SSH_FLAGS: extra flags for
#                  `tpu-vm ssh`, split on spaces (e.g. --internal-ip or --tunnel-through-iap)
#   SSLAX_BUCKET   bucket (or BUCKET/PREFIX) for the default workdir, see above
#   SHARED_WORKDIR=1  accept a workdir or ROOT that is not gs://: an absolute path on a mount that
#                  every worker shares
#   DRY_RUN=1      print the gcloud commands, shell-quoted, instead of running them
set -euo pipefail

usage() {
  echo "usage:" >&2
  sed -n '4,6p' "$0" | sed 's/^#//' >&2
  echo "(more in the comment at the top of $0)" >&2
  exit 2
}
die() { # a bad command line: the message, then the usage
  echo "tpu_pod.sh: error: $*" >&2
  usage
}
fail() {
  echo "tpu_pod.sh: error: $*" >&2
  exit 2
}

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
  exit 0
fi
[[ $# -ge 2 ]] || die "TPU_NAME and ZONE are required"
tpu=$1
zone=$2
shift 2
[[ -n $tpu && $tpu != -* ]] || die "bad TPU_NAME '$tpu'"
[[ -n $zone && $zone != -* ]] || die "bad ZONE '$zone'"

project=
sweep=
root=
separator=0
while (($#)); do
  case $1 in
    --project=?*) project=${1#*=} ;;
    --sweep=?*) sweep=${1#*=} ;;
    --root=?*) root=${1#*=} ;;
    --)
      separator=1
      shift
      break
      ;;
    *) die "unknown argument '$1' (train flags go after --)" ;;
  esac
  shift
done
train_flags=("$@")

if [[ -n $sweep || -n $root ]]; then
  [[ -n $sweep && -n $root ]] || die "--sweep and --root go together"
  [[ -f $sweep ]] || die "no sweep file '$sweep'"
  [[ ${START:-0} =~ ^[0-9]+$ ]] || die "START must be a cell index, got '${START}'"
elif ((!separator || ${#train_flags[@]} == 0)); then
  die "give the train flags after --, or --sweep=FILE --root=ROOT"
fi

# The workdir and config of the train flags, as absl reads them (--f=V, --f V, -f=V; the last
# one counts).
workdir=
has_workdir=0
config=
for ((i = 0; i < ${#train_flags[@]}; i++)); do
  flag=${train_flags[i]}
  case $flag in
    --workdir | -workdir | --config | -config)
      ((i + 1 < ${#train_flags[@]})) || die "$flag needs a value"
      i=$((i + 1))
      flag=$flag=${train_flags[i]}
      ;;
  esac
  case $flag in
    --workdir=* | -workdir=*)
      workdir=${flag#*=}
      has_workdir=1
      ;;
    --config=* | -config=*) config=${flag#*=} ;;
  esac
done

# ROOT or a workdir must be one place that every worker reads and writes: gs://, or with
# SHARED_WORKDIR=1 an absolute path on a shared mount.
check_shared() { # FLAG VALUE
  [[ $2 =~ ^gs://[^/]+ ]] && return
  if [[ ${SHARED_WORKDIR:-0} == 1 ]]; then
    [[ $2 == /* ]] ||
      fail "$1 '$2' must be an absolute path on the mount every worker shares (SHARED_WORKDIR=1)"
    return
  fi
  fail "$1 '$2' is not on gs://, so each worker would write its own local disk: give" \
    "$1=gs://BUCKET/PATH, or set SHARED_WORKDIR=1 if it is a mount every worker shares"
}

if [[ -n $sweep ]]; then
  ((!has_workdir)) || die "--workdir with --sweep: each cell's workdir is ROOT/CELL"
  check_shared --root "$root"
elif ((has_workdir)); then
  check_shared --workdir "$workdir"
else
  bucket=${SSLAX_BUCKET:-}
  bucket=${bucket#gs://}
  while [[ $bucket == */ ]]; do bucket=${bucket%/}; done
  [[ -n $bucket ]] ||
    fail "no --workdir: give --workdir=gs://BUCKET/PATH, or set SSLAX_BUCKET=BUCKET for a" \
      "workdir gs://BUCKET/runs/CONFIG-DATE"
  name=${config%%:*} # the config file, less its argument
  name=${name##*/}
  name=${name%.py}
  name=${name//[^A-Za-z0-9._-]/_}
  workdir=gs://$bucket/runs/${name:-simclr}-$(date -u +%Y%m%d-%H%M%S)
  train_flags+=("--workdir=$workdir")
  echo "tpu_pod.sh: workdir $workdir (to resume, run again with --workdir=$workdir)" >&2
fi

here=$(cd "$(dirname "$0")/.." && pwd)
gcloud_ssh=("${GCLOUD:-gcloud}" compute tpus tpu-vm ssh "$tpu" --zone="$zone")
[[ -z $project ]] || gcloud_ssh+=(--project="$project")
# shellcheck disable=SC2206  # word splitting wanted
[[ -z ${GCLOUD_SSH_FLAGS:-} ]] || gcloud_ssh+=(${GCLOUD_SSH_FLAGS})
gcloud_ssh+=(--worker=all)

# Single-quotes a string for any POSIX shell: the workers' login shell runs `bash -c '...'`.
squote() {
  local s=${1//\'/\'\\\'\'}
  printf "'%s'" "$s"
}

on_all_workers() { # SCRIPT: runs the bash script on every worker, or prints the command
  local command=("${gcloud_ssh[@]}" --command="bash -c $(squote "$1")")
  if [[ ${DRY_RUN:-0} == 1 ]]; then
    printf '%q ' "${command[@]}"
    echo
  else
    "${command[@]}"
  fi
}

# The workers' paths, as bash assignments; relative ones are relative to the worker's home.
remote_paths="$(printf 'dir=%q venv=%q logs=sslax-logs' \
  "${SSLAX_REMOTE_DIR:-sslax}" "${SSLAX_REMOTE_VENV:-sslax-venv}")
cd
for v in dir venv logs; do [[ \${!v} = /* ]] || printf -v \$v '%s/%s' \"\$HOME\" \"\${!v}\"; done"

setup() {
  local repo=${SSLAX_REPO:-} ref=${SSLAX_REF:-}
  if [[ -z $repo ]]; then
    repo=$(git -C "$here" remote get-url origin 2>/dev/null) ||
      fail "set SSLAX_REPO: this checkout has no 'origin' remote for the workers to clone"
  fi
  if [[ -z $ref ]]; then
    ref=$(git -C "$here" rev-parse HEAD) || fail "set SSLAX_REF: cannot read this checkout's HEAD"
    if [[ -n $(git -C "$here" status --porcelain --untracked-files=no) ]]; then
      echo "tpu_pod.sh: warning: uncommitted changes here are not on the workers" >&2
    fi
  fi
  local script
  script="set -euo pipefail
$remote_paths
$(printf 'repo=%q ref=%q py=%q jax=%q' "$repo" "$ref" "${SSLAX_PYTHON:-}" "${SSLAX_JAX:-jax[tpu]}")
if [[ -z \$py ]]; then
  if python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    py=python3
  else
    py=python3.11
  fi
fi
if ! command -v \"\$py\" >/dev/null || ! \"\$py\" -c 'import ensurepip' 2>/dev/null; then
  sudo apt-get update -qq
  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \"\$py\" \"\$py-venv\"
fi
if [[ -d \$dir/.git ]]; then
  git -C \"\$dir\" fetch --quiet --tags origin
else
  git clone --quiet \"\$repo\" \"\$dir\"
fi
target=\$ref
if git -C \"\$dir\" rev-parse --verify --quiet \"origin/\$ref^{commit}\" >/dev/null; then
  target=origin/\$ref
fi
git -C \"\$dir\" checkout --quiet --detach \"\$target\"
[[ -x \$venv/bin/python ]] || \"\$py\" -m venv \"\$venv\"
\"\$venv/bin/pip\" install --quiet --upgrade pip
\"\$venv/bin/pip\" install --quiet \"\$jax\" -e \"\$dir\"
echo \"[\$(hostname)] ready: sslax \$(git -C \"\$dir\" rev-parse --short HEAD) in \$dir, \$venv\""
  on_all_workers "$script"
}

train() { # FLAGS...: one run of sslax.train on every worker
  local script
  script="set -euo pipefail
$remote_paths
cd \"\$dir\"
source \"\$venv/bin/activate\"
mkdir -p \"\$logs\"
host=\$(hostname)
log=\$logs/worker-\$host.log
export PYTHONUNBUFFERED=1
command=(python -m sslax.train --distributed=on$(printf ' %q' "$@"))
echo \"== \$(date -u +%Y-%m-%dT%H:%M:%SZ) \${command[*]}\" >>\"\$log\"
\"\${command[@]}\" 2>&1 | tee -a \"\$log\" | sed -u \"s/^/[\$host] /\""
  on_all_workers "$script"
}

if [[ ${SETUP:-1} != 0 ]]; then
  setup
fi
if [[ -z $sweep ]]; then
  train "${train_flags[@]}"
  exit
fi
cells=$("${SSLAX_LOCAL_PYTHON:-python3}" "$sweep" list --root="$root") ||
  fail "cannot list the cells of $sweep"
index=0
flags=()
while IFS=$'\t' read -r -u 3 name cell_flags; do # fd 3: gcloud reads stdin
  if ((index >= ${START:-0})); then
    echo "== cell $index $name" >&2
    eval "flags=($cell_flags)" # shell-quoted by the sweep file (shlex.join)
    train "${flags[@]}" "${train_flags[@]}"
  fi
  index=$((index + 1))
done 3<<<"$cells"
