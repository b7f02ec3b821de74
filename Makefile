# DecentraSpace: the two commands are `make dev` (run the local stack) and `make test` (every test).
# Everything they need installs from this repository's own files: package.json + package-lock.json
# (Foundry, solc-js, OpenZeppelin, forge-std) and Cargo.lock.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# forge compiles with the pinned solc-js through this wrapper, never downloading a compiler.
export FOUNDRY_SOLC := $(CURDIR)/tools/solc/solc
export FOUNDRY_OFFLINE := true
# SQL is checked at compile time against the committed .sqlx cache, so builds need no database.
export SQLX_OFFLINE := true

# The Foundry binaries themselves: node_modules/.bin's wrappers lose the exit code.
FORGE := tools/foundry forge
CARGO ?= cargo
# sqlx-cli, pinned, installed on first use outside the checkout.
SQLX_VERSION := 0.9.0
TOOLS_DIR ?= $(HOME)/.cache/decentraspace/tools
SQLX := $(TOOLS_DIR)/bin/sqlx
# schemathesis (API schema fuzzing), pinned in tools/schemathesis/requirements.txt, in a venv of its own.
VENV := $(TOOLS_DIR)/venv
export SCHEMATHESIS := $(VENV)/bin/schemathesis
# cargo-nextest runs the tests (side by side across test binaries); see .config/nextest.toml.
NEXTEST_VERSION := 0.9.143

.PHONY: build bwrap pebble nextest schemathesis bench bench-api bench-build bench-indexer bench-meter bench-upload help install contracts abi abi-check test test-contracts test-rust lint fmt coverage gas dev db sqlx-prepare sqlx-check migrate

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

node_modules/.package-lock.json: package.json package-lock.json
	@echo "npm ci: Foundry, solc-js, OpenZeppelin, forge-std, js-ipfs, arlocal and verdaccio from package-lock.json (about 2 minutes on a fresh machine)"
	npm ci --no-audit --no-fund
	@touch $@

# The package managers site builds may use beside the machine's npm (pnpm, yarn), bound read-only
# into the build sandbox (BUILD_TOOLS_DIR).
tools/package-managers/node_modules/.package-lock.json: tools/package-managers/package.json tools/package-managers/package-lock.json
	npm ci --prefix tools/package-managers --no-audit --no-fund
	@touch $@

install: node_modules/.package-lock.json tools/package-managers/node_modules/.package-lock.json ## Install the pinned JS-side tools (npm ci), and the package managers builds may use

contracts: install ## Compile the contracts
	$(FORGE) build

abi: contracts ## Export the contracts' ABI and bytecode into abi/json (commit the result)
	node tools/export-abi.mjs

abi-check: contracts ## Fail when abi/json differs from the contracts
	node tools/export-abi.mjs --check

test-contracts: contracts ## Foundry suite with the ci profile (1,000 fuzz runs, 256 invariant runs at depth 50)
	FOUNDRY_PROFILE=ci $(FORGE) test

$(SCHEMATHESIS): tools/schemathesis/requirements.txt
	@echo "installing schemathesis into $(VENV) (tools/schemathesis/requirements.txt)"
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tools/schemathesis/requirements.txt
	@touch $@

schemathesis: $(SCHEMATHESIS) ## Install the pinned schemathesis the API schema test drives

build: ## Build the binaries and every test (make dev and make test share this one build)
	@echo "cargo: building the workspace (a fresh machine compiles about 450 crates first)"
	$(CARGO) build --workspace --bins --tests --locked

bwrap: ## Install bubblewrap, the sandbox site builds run in (Debian's bubblewrap package)
	@command -v bwrap >/dev/null || { echo "installing bubblewrap (apt-get)"; \
		apt_get=apt-get; [ "$$(id -u)" = 0 ] || apt_get="sudo apt-get"; \
		$$apt_get install -y bubblewrap || { $$apt_get update && $$apt_get install -y bubblewrap; }; }

pebble: ## Install pebble, the ACME test server the HTTPS tests order certificates from (Debian's pebble package)
	@command -v pebble >/dev/null || { echo "installing pebble (apt-get)"; \
		apt_get=apt-get; [ "$$(id -u)" = 0 ] || apt_get="sudo apt-get"; \
		$$apt_get install -y pebble || { $$apt_get update && $$apt_get install -y pebble; }; }

nextest: ## Install cargo-nextest (the machines have it; elsewhere it is built from crates.io)
	@command -v cargo-nextest >/dev/null || { echo "installing cargo-nextest $(NEXTEST_VERSION)"; \
		$(CARGO) install cargo-nextest --version $(NEXTEST_VERSION) --locked; }

test-rust: contracts $(SCHEMATHESIS) nextest bwrap pebble build ## Rust unit, fast HTTP-level and end-to-end tests (anvil + the deploy script, Postgres)
	DATABASE_URL="$$(scripts/postgres.sh)" $(CARGO) nextest run --workspace --locked

test: abi-check test-contracts test-rust ## Every test

lint: install sqlx-check ## cargo fmt, clippy, forge fmt, and the .sqlx cache is current
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	$(FORGE) fmt --check

$(SQLX):
	@echo "installing sqlx-cli $(SQLX_VERSION) into $(TOOLS_DIR) (the .sqlx cache check needs it)"
	$(CARGO) install sqlx-cli --version $(SQLX_VERSION) --no-default-features --features postgres,rustls --locked --root $(TOOLS_DIR)

migrate: $(SQLX) ## Apply the migrations to the database of `make db`
	DATABASE_URL="$$(scripts/postgres.sh)" $(SQLX) migrate run --source migrations

sqlx-prepare: migrate ## Refresh the .sqlx query cache after changing SQL (commit the result)
	DATABASE_URL="$$(scripts/postgres.sh)" SQLX_OFFLINE=false PATH="$(TOOLS_DIR)/bin:$$PATH" $(CARGO) sqlx prepare --workspace

sqlx-check: migrate ## Fail when the .sqlx query cache is out of date
	DATABASE_URL="$$(scripts/postgres.sh)" SQLX_OFFLINE=false PATH="$(TOOLS_DIR)/bin:$$PATH" $(CARGO) sqlx prepare --workspace --check

fmt: install ## Format Rust and Solidity
	$(CARGO) fmt --all
	$(FORGE) fmt

coverage: install ## Contract line and branch coverage
	$(FORGE) coverage --report summary --no-match-path 'contracts/test/Gas.t.sol'
	@# coverage leaves instrumented artifacts behind; rebuild so later forge and abi runs see real ones.
	$(FORGE) build --force >/dev/null

gas: contracts ## Gas of the main operations (figures for BENCHMARKS.md)
	$(FORGE) test --match-path contracts/test/Gas.t.sol -vv

bench: bench-indexer bench-api bench-meter bench-upload bench-gateway bench-build ## Every benchmark (figures go to BENCHMARKS.md)

bench-api: contracts ## API reads against pgbench -S (wrk), and relay throughput
	command -v wrk >/dev/null || { apt-get install -y wrk || sudo apt-get install -y wrk; }
	DATABASE_URL="$$(scripts/postgres.sh)" $(CARGO) bench --locked -p decentraspace-tests --bench api

bench-meter: contracts ## One billing-meter cycle over 10,000 active services (wall time, gas per service)
	DATABASE_URL="$$(scripts/postgres.sh)" $(CARGO) bench --locked -p decentraspace-tests --bench meter

bench-upload: contracts ## A 1 GiB upload streamed through the API binary to IPFS (throughput, API peak RSS)
	$(CARGO) build --locked --release -p decentraspace-api
	DATABASE_URL="$$(scripts/postgres.sh)" $(CARGO) bench --locked -p decentraspace-tests --bench upload

bench-gateway: contracts ## The site gateway against nginx (same machine, same run): a page over HTTP and HTTPS, a 100 MB file
	command -v wrk >/dev/null || { apt-get install -y wrk || sudo apt-get install -y wrk; }
	command -v nginx >/dev/null || { apt-get install -y nginx-light || sudo apt-get install -y nginx-light; }
	DATABASE_URL="$$(scripts/postgres.sh)" $(CARGO) bench --locked -p decentraspace-tests --bench gateway

bench-build: contracts bwrap ## A site built from source, push to live, against the same build run directly (cold and warm)
	DATABASE_URL="$$(scripts/postgres.sh)" $(CARGO) bench --locked -p decentraspace-tests --bench build

bench-indexer: contracts ## Indexer backfill (1M events) and head-latency benchmark
	$(CARGO) build --release --locked -p decentraspace-indexer
	DATABASE_URL="$$(scripts/postgres.sh)" INDEXER_BIN="$$($(CARGO) metadata --format-version 1 --no-deps | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))')/release/indexer" \
		$(CARGO) bench --locked -p decentraspace-tests --bench indexer_backfill

db: ## Print a Postgres URL (existing server, or a private cluster under .data/)
	@scripts/postgres.sh

dev: bwrap ## Run the local stack: Postgres, anvil with the platform deployed, the indexer, the API
	@echo "cargo: building the binaries while npm installs and forge compiles (the same build make test makes, so either reuses the other's)"
	$(CARGO) build --workspace --bins --locked & cargo=$$!; \
		$(MAKE) --no-print-directory contracts || { kill $$cargo; exit 1; }; \
		wait $$cargo
	scripts/dev.sh
