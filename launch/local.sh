#!/usr/bin/env bash
# N processes of one multi-host run on this machine: JAX's multi-controller runtime with gloo
# collectives over CPU devices, the way a pod runs, for trying and testing multi-host code.
#
#   launch/local.sh NUM_PROCESSES -- [train flags]
#   launch/local.sh 2 -- --config=experiments/configs/simclr.py --workdir=runs/two
#
# Each process gets DEVICES_PER_PROCESS CPU devices (default 2), so the run sees
# NUM_PROCESSES x DEVICES_PER_PROCESS devices. Process 0's output is shown here; every process
# logs to LOG_DIR/process_I.log, a local directory (default: WORKDIR/logs). The workdir may be
# on object storage, --workdir=gs://BUCKET/PATH; then the logs default to
# runs/logs/NAME-YYYYMMDD-HHMMSS under the current directory (NAME: the workdir's last part),
# and the first line printed says where. The first process to fail stops all the others, and
# the script exits with its status.
#
# Environment: DEVICES_PER_PROCESS (2), PORT (coordinator port; default a free one), LOG_DIR,
# PYTHON (python), DISTRIBUTED_TIMEOUT_S (seconds before the others give up on a dead process).
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
}

[[ $# -ge 1 && "$1" =~ ^[1-9][0-9]*$ ]] || usage
num_processes=$1
shift
if [[ $# -gt 0 ]]; then
  [[ "$1" == "--" ]] || usage
  shift
fi
devices=${DEVICES_PER_PROCESS:-2}
[[ "$devices" =~ ^[1-9][0-9]*$ ]] || { echo "DEVICES_PER_PROCESS must be a positive integer" >&2; exit 2; }
python=${PYTHON:-python}

# Every process must write to the same workdir; pick one now if the flags do not.
workdir=""
for arg in "$@"; do
  case "$arg" in
    --workdir=*) workdir=${arg#--workdir=} ;;
    --workdir) echo "local.sh: write --workdir=DIR (one argument)" >&2; exit 2 ;;
  esac
done
extra=()
if [[ -z "$workdir" ]]; then
  workdir="runs/local-${num_processes}p-$(date +%Y%m%d-%H%M%S)"
  extra+=("--workdir=$workdir")
fi
# The shell writes the logs, so they go to a local directory whatever the workdir.
if [[ -n "${LOG_DIR:-}" ]]; then
  log_dir=$LOG_DIR
elif [[ "$workdir" == *://* ]]; then
  name=$workdir
  while [[ "$name" == */ ]]; do name=${name%/}; done
  name=${name##*/}
  log_dir="runs/logs/${name}-$(date +%Y%m%d-%H%M%S)"
else
  log_dir=$workdir/logs
fi
if [[ "$log_dir" == *://* ]]; then
  echo "local.sh: LOG_DIR must be a local directory, not $log_dir" >&2
  exit 2
fi
mkdir -p "$log_dir"
port=${PORT:-$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
timeout_flag=()
if [[ -n "${DISTRIBUTED_TIMEOUT_S:-}" ]]; then
  timeout_flag=("--distributed_timeout_s=$DISTRIBUTED_TIMEOUT_S")
fi

pids=()
tail_pid=""
stop_all() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [[ -n "$tail_pid" ]]; then kill "$tail_pid" 2>/dev/null || true; fi
}
trap 'stop_all; exit 130' INT TERM

echo "local.sh: $num_processes processes x $devices CPU devices, coordinator 127.0.0.1:$port, logs in $log_dir" >&2
for ((i = 0; i < num_processes; i++)); do
  JAX_PLATFORMS=cpu JAX_NUM_CPU_DEVICES=$devices JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo \
    "$python" -m sslax.train "$@" "${extra[@]}" "${timeout_flag[@]}" \
    --coordinator_address="127.0.0.1:$port" --num_processes="$num_processes" --process_id="$i" \
    >"$log_dir/process_$i.log" 2>&1 &
  pids+=($!)
done
tail -n +1 -f --pid="${pids[0]}" "$log_dir/process_0.log" &
tail_pid=$!

# Wait for the processes one exit at a time; the first failure stops the rest.
running=("${pids[@]}")
while ((${#running[@]} > 0)); do
  finished=""
  status=0
  wait -n -p finished "${running[@]}" || status=$?
  still=()
  for pid in "${running[@]}"; do [[ "$pid" != "$finished" ]] && still+=("$pid"); done
  running=("${still[@]}")
  if ((status != 0)); then
    failed="?"
    for ((i = 0; i < num_processes; i++)); do
      [[ "${pids[$i]}" == "$finished" ]] && failed=$i
    done
    stop_all
    wait 2>/dev/null || true
    echo "local.sh: process $failed exited with status $status; stopped the others." \
      "Its log: $log_dir/process_$failed.log" >&2
    if [[ "$failed" != 0 ]]; then tail -n 5 "$log_dir/process_$failed.log" >&2 || true; fi
    exit "$status"
  fi
done
wait "$tail_pid" 2>/dev/null || true
