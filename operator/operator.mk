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

# The Gateway API's own schemas (npm @kubernetes-models/gateway-api, pinned by tests/operator/gatewayapi's lock
# file) for validating the HTTPRoutes the operator renders; tests/operator/test_gateway_api_schema.py runs it.
GATEWAY_API_SCHEMA := $(TOOLS)/gateway-api
GATEWAY_API_FILES := $(addprefix tests/operator/gatewayapi/,package.json package-lock.json validate.mjs)
.PHONY: gateway-api-schema

gateway-api-schema: $(GATEWAY_API_SCHEMA)/.stamp

$(GATEWAY_API_SCHEMA)/.stamp: $(GATEWAY_API_FILES)
	rm -rf $(GATEWAY_API_SCHEMA)
	mkdir -p $(GATEWAY_API_SCHEMA)
	cp $(GATEWAY_API_FILES) $(GATEWAY_API_SCHEMA)/
	npm ci --prefix $(GATEWAY_API_SCHEMA) --no-audit --no-fund --loglevel=error
	touch $@
