# Operator targets (included by the top-level Makefile).

.PHONY: bench-operator

bench-operator: setup
	$(BIN)/python benchmarks/bench_operator.py --count $${COUNT:-1000}

# End-to-end: local scenarios (real operator + real modelserve processes on an emulated cluster), and kind.
.PHONY: e2e-local e2e

e2e-local: setup
	$(BIN)/pytest tests/e2e/test_local_scenarios.py -s -m e2e_local

e2e: setup
	$(BIN)/python e2e/kind_e2e.py
