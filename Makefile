# The two commands a new user runs: `make demo` and `make test`.
BUILD ?= build
JOBS ?= $(shell nproc)

.PHONY: deps configure build demo test install clean

deps:
	./scripts/install-deps.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release

configure: deps $(BUILD)/CMakeCache.txt

build: configure
	cmake --build $(BUILD) -j $(JOBS)

# The demo needs only the binary, not the test suites.
demo: configure
	cmake --build $(BUILD) -j $(JOBS) --target atelier
	./scripts/demo.sh $(BUILD)/atelier

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# The binary and its data files under $(PREFIX) (bin/, share/atelier/).
PREFIX ?= /usr/local
install: configure
	cmake --build $(BUILD) -j $(JOBS) --target atelier
	cmake --install $(BUILD) --prefix $(PREFIX)

clean:
	rm -rf $(BUILD)
