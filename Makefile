# gamerelay — `make help` lists the targets.
GO          ?= go
BIN         := bin/gamerelay
TOOLS       := $(CURDIR)/bin/tools
STATICCHECK := $(TOOLS)/staticcheck
STATICCHECK_VERSION := v0.8.2
PKGS        := ./...
TEST_FLAGS  ?= -race -count=1 -timeout 15m

.PHONY: help build run test check fmt vet staticcheck bench deps clean

help: ## list the targets
	@awk 'BEGIN{FS=":.*## "} /^[a-z-]+:.*## /{printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

deps: ## download Go modules
	$(GO) mod download

build: deps ## build bin/gamerelay
	$(GO) build -trimpath -o $(BIN) ./cmd/gamerelay

run: build ## start the whole system on embedded NATS (gamerelay dev)
	$(BIN) dev

test: deps ## run every test (race detector on) and every benchmark once
	$(GO) test $(TEST_FLAGS) $(PKGS)
	$(GO) test -run '^$$' -bench . -benchtime 1x -count=1 $(PKGS)

fmt: ## gofmt the tree
	gofmt -w $$(git ls-files '*.go')

vet: deps
	$(GO) vet $(PKGS)

$(STATICCHECK):
	GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

staticcheck: $(STATICCHECK)
	$(STATICCHECK) $(PKGS)

check: deps $(STATICCHECK) ## what CI runs: gofmt, go vet, staticcheck, tests with -race
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(STATICCHECK) $(PKGS)
	$(MAKE) test

bench: ## run the Go benchmarks with allocations (figures go to docs/benchmarks.md)
	$(GO) test -run '^$$' -bench . -benchmem -count=1 -timeout 30m $(PKGS)

clean: ## remove build output and dev data
	rm -rf bin .gamerelay-dev
