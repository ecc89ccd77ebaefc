# gamerelay — `make help` lists the targets.
GO          ?= go
BIN         := bin/gamerelay
TOOLS       := $(CURDIR)/bin/tools
STATICCHECK := $(TOOLS)/staticcheck
STATICCHECK_VERSION := v0.8.2
# helm for the chart tests; the -X flags are those of helm's own release build
# (version, and the Kubernetes version `helm template` assumes: 1.37 for the
# k8s.io v0.37 modules helm v3.22 is built with).
HELM_VERSION := v3.22.0
HELM        := $(TOOLS)/helm-$(HELM_VERSION)
HELM_LDFLAGS := -s -w -X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION) \
	-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=37 \
	-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=37
# nats-server for the fault suite and the cluster benchmarks: the version go.mod requires, built from source.
NATS_SERVER_VERSION := $(shell awk '$$1 == "github.com/nats-io/nats-server/v2" {print $$2}' go.mod)
NATS_SERVER := $(TOOLS)/nats-server-$(NATS_SERVER_VERSION)
FAULTS_RUN     ?= .
FAULTS_TIMEOUT ?= 9m
FAULTS_REPORT  ?= $(CURDIR)/bin/faults-report.md
# BASELINE_BIN: another gamerelay binary the cluster suite measures beside this one.
BASELINE_BIN ?=
IMAGE       ?= ghcr.io/gamerelay/gamerelay
IMAGE_TAG   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
PKGS        := ./...
TEST_FLAGS  ?= -race -count=1 -timeout 15m

.PHONY: help build run test test-faults check fmt vet staticcheck bench bench-cluster deps clean image helm manifests test-k8s

help: ## list the targets
	@awk 'BEGIN{FS=":.*## "} /^[a-z0-9-]+:.*## /{printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

deps: ## download Go modules
	$(GO) mod download

build: deps ## build bin/gamerelay
	$(GO) build -trimpath -o $(BIN) ./cmd/gamerelay

run: build ## start the whole system on embedded NATS (gamerelay dev)
	$(BIN) dev

test: deps e2e-deps ## run every test (race detector on) and every benchmark once
	$(GO) test $(TEST_FLAGS) $(PKGS)
	$(GO) test -run '^$$' -bench . -benchtime 1x -count=1 $(PKGS)
	$(MAKE) test-k8s

$(NATS_SERVER):
	@mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) $(GO) install github.com/nats-io/nats-server/v2@$(NATS_SERVER_VERSION)
	mv $(TOOLS)/nats-server $(NATS_SERVER)

test-faults: deps $(NATS_SERVER) ## fault suite: every role and NATS/MongoDB as processes under load, crashed and hung (FAULTS_RUN=TestFaults/<scenario>; report: bin/faults-report.md)
	$(GO) build -o bin/faults/gamerelay ./cmd/gamerelay
	FAULTS_NATS_SERVER=$(NATS_SERVER) FAULTS_GAMERELAY=$(CURDIR)/bin/faults/gamerelay FAULTS_REPORT=$(FAULTS_REPORT) \
		$(GO) test -tags faults -count=1 -v -timeout $(FAULTS_TIMEOUT) -run '$(FAULTS_RUN)' ./internal/faults

# The browser test (web/e2e_test.go) needs Debian's chromium and
# playwright-core; GAMERELAY_SKIP_BROWSER=1 skips it where neither can be had.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
.PHONY: e2e-deps
e2e-deps: ## install what the browser test needs: Debian chromium (apt-get), playwright-core (npm ci in web/e2e)
	@if [ ! -x /usr/bin/chromium ]; then \
		echo "e2e-deps: installing chromium with apt-get"; \
		$(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	fi
	@if [ ! -d web/e2e/node_modules ]; then \
		echo "e2e-deps: npm ci in web/e2e"; \
		cd web/e2e && npm ci --no-audit --no-fund; \
	fi

fmt: ## gofmt the tree
	gofmt -w $$(git ls-files '*.go')

vet: deps ## go vet, also of the fault suite and of the chart tests' module
	$(GO) vet $(PKGS)
	$(GO) vet -tags faults ./internal/faults
	cd deploy/k8s/chartest && $(GO) vet ./...

$(STATICCHECK):
	GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

staticcheck: $(STATICCHECK) ## staticcheck (installed into bin/tools) over the packages vet checks
	$(STATICCHECK) $(PKGS)
	$(STATICCHECK) -tags faults ./internal/faults
	cd deploy/k8s/chartest && $(STATICCHECK) ./...

# check sets up what it needs on a fresh checkout: modules (deps),
# staticcheck, helm and the browser test's dependencies (prerequisites of
# vet, staticcheck and test).
check: ## what CI runs (.ci/run): gofmt, go vet, staticcheck, then make test
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(MAKE) vet
	$(MAKE) staticcheck
	$(MAKE) test

bench: build $(NATS_SERVER) ## the dev suite and the cluster suite (rewrite their tables in docs/benchmarks.md; BASELINE_BIN=path adds another gamerelay binary), then the Go benchmarks
	ulimit -n 20000 && $(BIN) bench --suite --out docs/benchmarks.md
	$(MAKE) bench-cluster
	$(GO) test -run '^$$' -bench . -benchmem -count=1 -timeout 30m $(PKGS)

bench-cluster: build $(NATS_SERVER) ## the cluster suite alone: 3 nats-server nodes, R3 streams, sequencer and gateway processes (BASELINE_BIN=path: compare another gamerelay binary)
	ulimit -n 20000 && $(BIN) bench --suite --cluster --nats-server $(NATS_SERVER) $(if $(BASELINE_BIN),--baseline-bin $(BASELINE_BIN)) --out docs/benchmarks.md

clean: ## remove build output and dev data
	rm -rf bin .gamerelay-dev

image: ## build the container image with docker (needs a Docker engine; none runs on the dev machines)
	docker build -t $(IMAGE):$(IMAGE_TAG) .

$(HELM):
	@mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) $(GO) install -trimpath -ldflags '$(HELM_LDFLAGS)' helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)
	mv $(TOOLS)/helm $(HELM)

helm: $(HELM) ## install helm into bin/tools (pinned, built from source)

manifests: $(HELM) ## render deploy/k8s/manifests, the alert rules and the dashboard copy from the chart
	HELM=$(HELM) deploy/k8s/render.sh write

test-k8s: $(HELM) ## chart tests: helm lint/template, strict Kubernetes decoding, policies, manifests in sync
	cd deploy/k8s/chartest && HELM=$(HELM) $(GO) test -count=1 ./...
