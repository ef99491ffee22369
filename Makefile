# Quick start:  make demo   (set up, generate captures of a site under attack, analyse them, print a summary)
#               make test   (set up with the test extras, run the test suite)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO ?= demo

.PHONY: demo test bench clean-cache

$(BIN)/detector: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,dist,aot]'
	$(BIN)/detector aot -q || echo "detector aot: no build; kernels come from Numba's JIT cache (slower start)"
	touch $@

demo: $(BIN)/detector
	$(BIN)/detector synth hpc-mix mitm-arp-spoof exfil-dns-tunnel theft-stratum access-ssh-bruteforce -o $(DEMO)
	$(BIN)/detector analyze $(DEMO) --config $(DEMO)/site.toml -o $(DEMO)/alerts.jsonl --flows-out $(DEMO)/flows.parquet

# Two runs: the suite, then the GPU kernels under Numba's CUDA simulator (its variables must be
# set before Numba is imported). pytest exits 5 when a selection collects no test: not a failure.
test: $(BIN)/detector
	$(BIN)/python -m pytest -q -m "not cudasim"; rc=$$?; [ $$rc -eq 5 ] && rc=0; [ $$rc -eq 0 ] || exit $$rc; \
	NUMBA_ENABLE_CUDASIM=1 NUMBA_DISABLE_JIT=1 $(BIN)/python -m pytest -q -m cudasim; \
	rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc

bench: $(BIN)/detector
	$(BIN)/python -m pip install -q -e '.[bench]' || true
	$(BIN)/detector bench --plot benchmarks/work/bench.png

# compiled kernels are cached next to the sources; after editing a kernel's helpers, clear them
# (the ahead-of-time build notices changed sources itself; rebuild it with: detector aot)
clean-cache:
	find detector kernels models -name '*.nbi' -delete -o -name '*.nbc' -delete
