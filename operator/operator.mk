# Operator targets (included by the top-level Makefile).

.PHONY: bench-operator

bench-operator: setup
	$(BIN)/python benchmarks/bench_operator.py --count $${COUNT:-1000}
