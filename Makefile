# Sagaz for Go. `make run` and `make test` need nothing but Go (and gcc for
# the race detector); heavier tiers have their own targets.
GO      ?= go
BIN     ?= bin/sagaz
ARGS    ?=
# `sagaz version` and the sagaz_build_info metric report these.
VERSION ?= $(shell git describe --tags --match 'v*' --always --dirty 2>/dev/null || echo devel)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X github.com/sagaz-go/sagaz/internal/buildinfo.version=$(VERSION) -X github.com/sagaz-go/sagaz/internal/buildinfo.commit=$(COMMIT)

.PHONY: build run demo docker test test-integration test-ui kafka-start kafka-stop test-short lint fmt bench bench-full bench-go clean

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/consumer

run: build
	./$(BIN) run $(ARGS)

# Produce sample order events to the running dev broker (some with fail_at).
demo: build
	./$(BIN) demo --count 20

# The container image (docker-compose.yml builds the same).
docker:
	docker build --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) -t sagaz .

# Unit and component tests, race detector on.
test:
	$(GO) test -race -count=1 -timeout 15m ./...

# Real Apache Kafka (fetched from Maven Central, run on Java 17) and kcat.
# Set SAGAZ_KAFKA_BROKERS to use a broker of your own instead.
test-integration:
	./scripts/integration.sh

# The console in a real headless browser (Debian's chromium, installed when
# missing and root) against a member on kfake; screenshots in bin/ui-screenshots.
test-ui:
	./scripts/test-ui.sh

# A local Apache Kafka broker for manual runs (prints its address; later:
# scripts/kafka-local.sh addr). bin/sagaz run --brokers $$(scripts/kafka-local.sh addr)
kafka-start:
	./scripts/kafka-local.sh start
kafka-stop:
	./scripts/kafka-local.sh stop

test-short:
	$(GO) test -short -count=1 ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags uitest ./console/
	cd integration && $(GO) vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

# The performance harness (docs/benchmarks.md): kfake in its own process, the Sagaz
# member in another, the baseline measured in the same run; with python3, also
# Python Sagaz 1.5.0 (virtualenv cached in .cache/sagaz-py) for "× Sagaz".
bench:
	$(GO) build -o bin/bench ./cmd/bench
	./bin/bench $(BENCH_ARGS)

bench-full:
	$(GO) build -o bin/bench ./cmd/bench
	./bin/bench -full $(BENCH_ARGS)

# Go micro-benchmarks of the hot functions (for benchstat).
bench-go:
	$(GO) test -run '^$$' -bench . -benchtime 2s ./storage/ ./engine/
	$(GO) test -run '^$$' -bench ChangelogAppendTake -benchtime 2s ./consumer/

clean:
	rm -rf bin
