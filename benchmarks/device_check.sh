#!/usr/bin/env bash
# The checks that need a real CUDA GPU, run as one command on a lent GPU machine:
#   1. the `gpu` test marker (GPU flows equal the CPU's on the corpus and on 1.2M packets, alerts
#      equal on every attack scenario, feature and model math);
#   2. `detector bench` (flows and analyze on one core, all cores and the GPU, side by side; the
#      GPU and one core also on the same traffic cut to snaplen 128);
#   3. benchmarks/gpu_flows.py on a snaplen-128 capture of FLOWS_PACKETS (16M) packets: decode +
#      flow accounting on one core, all cores and the GPU, batches of 1M, 4M and 16M packets,
#      with each step's share of the GPU's time and its host reads and launches per batch;
#   4. `cache`: kernels compile once (below), as part of the default now.
# Not by default: `aot` (detector aot, about 2-4 minutes: the CPU kernels compiled ahead, so
# that the steps after it run the GPU path beside compiled-ahead CPU kernels, e.g.
# STEPS="aot tests"; it needs a C compiler there, and says so when there is none).
# Not by default: `telemetry` (STEPS="telemetry", about 2 minutes; copy nvidia-ml-py there first:
#   pip download --no-deps -d .whl nvidia-ml-py): the `gpu` tests of GPU telemetry (a CuPy kernel
#   keeps GPU 0 busy about 90 s; the daemon's NVML source must raise gpu_unallocated within
#   busy_min_s plus two samples), while nvidia-smi logs --query-gpu and --query-compute-apps each
#   second -> $OUT/nvidia-smi-*.csv (real logs to commit as test data, with the card named).
# Not by default: `resources` (STEPS="resources"); `cache` is a default step:
#   `resources`: every CUDA kernel compiled for the GPU's compute capability (CC, default 90),
#     its registers and local-memory spills from ptxas -> $OUT/kernel-resources.json;
#   `cache`: kernels compile once: a small capture through --backend gpu twice, the CUDA kernel
#     cache empty before the first, then a process that only loads the kernels (targets: the
#     second run <= 3 s, the loading process <= 2 s) -> $OUT/kernel-cache.json.
# Every step has its own time limit, so that one that hangs leaves the others their time.
# On an H200 machine (2026-11-26) a process spends about 35 s compiling the CUDA kernels, and
# the first one about 60 s more compiling the CPU kernels: the tests took 80-120 s, the bench's
# GPU rows about 40 s each, dpkt 25 s a round. The defaults below fit in about 8 minutes, which
# leaves a session's 15 minutes of device time room for one more call.
#
#   OUT=folder bash benchmarks/device_check.sh
#
# Packages missing on that machine travel as wheels in .whl/; a copy of the capture corpus in
# .corpus/ is tested when present (the ../shared/pcaps beside a checkout does not travel).
set -u
STEPS=${STEPS:-tests bench flows cache}  # these steps, in this order
OUT=${OUT:-benchmarks/work/device}
PACKETS=${PACKETS:-2000000}
FLOWS_PACKETS=${FLOWS_PACKETS:-16000000}
mkdir -p "$OUT" benchmarks/work
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site:$PWD"
fi
[ -f .corpus/MANIFEST.tsv ] && export DETECTOR_CORPUS="$PWD/.corpus"
{
  date -u; nvidia-smi -L; echo "cores: $(nproc)"; python3 -V
  python3 -c 'import numpy, numba, pyarrow, cupy, sklearn; from numba import cuda
print("numpy", numpy.__version__, "numba", numba.__version__, "pyarrow", pyarrow.__version__,
      "cupy", cupy.__version__, "sklearn", sklearn.__version__, "cuda available", cuda.is_available())'
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# the bench's capture, generated while the tests run (the bench would make the same one)
CAP=benchmarks/work/hpc-mix-$PACKETS.pcap
( [ -f "$CAP" ] || { python3 -m detector synth hpc-mix -o benchmarks/work/synth --packets "$PACKETS" --seed 1 \
    && mv benchmarks/work/synth/hpc-mix.pcap "$CAP"; } ) >"$OUT/synth.log" 2>&1 &
SYNTH=$!
# and gpu_flows' snaplen-128 capture, under the name it looks for
SNAP=benchmarks/work/hpc-mix-$FLOWS_PACKETS-snap128.pcap
( [ -f "$SNAP" ] || { python3 -m detector synth hpc-mix -o benchmarks/work/synth-snap --packets "$FLOWS_PACKETS" \
    --snaplen 128 && mv benchmarks/work/synth-snap/hpc-mix.pcap "$SNAP"; } ) >"$OUT/synth-snap.log" 2>&1 &
SNAP_SYNTH=$!
synth_done() {  # the capture is there (waits for it once)
  [ -n "$SYNTH" ] && { wait "$SYNTH" || cat "$OUT/synth.log"; SYNTH=; }
  [ -f "$CAP" ]
}

BENCH_ONLY=${BENCH_ONLY:-detector-cpu-1core detector-cpu-1thread detector-cpu-all detector-gpu detector-gpu-process \
  detector-analyze-cpu-1core detector-analyze-gpu detector-cpu-1core-snap128 detector-gpu-snap128}

run_tests() {
  timeout "${TEST_LIMIT:-150}" python3 -m pytest -q -m gpu -p no:cacheprovider --durations=8 tests/test_gpu.py \
    2>&1 | tee "$OUT/gpu-tests.log" | tail -40
}

run_bench() {
  synth_done || return
  wait "$SNAP_SYNTH" 2>/dev/null  # no capture being made beside the CPU rows
  # shellcheck disable=SC2086  # BENCH_ONLY is a list of names
  # its own capture names: the one made above, and the snaplen-128 copy it makes for the GPU rows
  timeout "${BENCH_LIMIT:-220}" python3 -m detector bench --work benchmarks/work --packets "$PACKETS" \
    --repeat "${REPEAT:-1}" --only $BENCH_ONLY \
    -o "$OUT/bench.json" --plot "$OUT/bench.png" --markdown "$OUT/bench.md" 2>&1 | tail -30
}

run_aot() {
  timeout "${AOT_LIMIT:-300}" python3 -m detector aot 2>&1 | tail -5
  python3 -m detector aot --status 2>&1 | tee "$OUT/aot.txt"
}

run_flows() {
  wait "$SNAP_SYNTH" 2>/dev/null; [ -f "$SNAP" ] || cat "$OUT/synth-snap.log"
  timeout "${FLOWS_LIMIT:-110}" python3 benchmarks/gpu_flows.py --packets "$FLOWS_PACKETS" --snaplen 128 --repeat 1 \
    --batches 1000000,4000000,16000000 --tools detector-cpu-1core,detector-cpu-all,detector-gpu \
    -o "$OUT/gpu-flows.json" 2>&1 | tail -20
}

run_resources() {
  timeout "${RESOURCES_LIMIT:-150}" python3 -m kernels.cuda_compile_check --cc "${CC:-90}" \
    --json "$OUT/kernel-resources.json" 2>&1 | tail -20
}

run_telemetry() {
  nvidia-smi --query-gpu=name,driver_version --format=csv >"$OUT/nvidia-smi-card.csv" 2>&1
  nvidia-smi --query-gpu=timestamp,index,uuid,utilization.gpu,utilization.memory,memory.used,power.draw,clocks.sm,clocks.mem \
    --format=csv -l 1 >"$OUT/nvidia-smi-query-gpu.csv" 2>&1 &
  local gpu_log=$!
  nvidia-smi --query-compute-apps=timestamp,gpu_uuid,pid,process_name,used_gpu_memory --format=csv -l 1 \
    >"$OUT/nvidia-smi-compute-apps.csv" 2>&1 &
  local apps_log=$!
  timeout "${TELEMETRY_LIMIT:-150}" python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu_live.py \
    2>&1 | tee "$OUT/telemetry-tests.log" | tail -20
  kill "$gpu_log" "$apps_log" 2>/dev/null
}

run_cache() {
  timeout "${CACHE_LIMIT:-100}" python3 benchmarks/kernel_cache.py -o "$OUT/kernel-cache.json" 2>&1 | tail -5
}

for step in $STEPS; do "run_$step"; done
ls -la "$OUT"
