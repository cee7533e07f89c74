# Convenience wrapper around CMake. `make` builds, `make test` runs the
# tests, `make demo` runs one reasoning problem on the bundled model.
BUILD ?= build
JOBS ?= 2

.PHONY: all build test demo clean
all: build

build:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build $(BUILD) -j$(JOBS)

test: build
	ctest --test-dir $(BUILD) -LE cuda --output-on-failure -j$(JOBS)

demo: build
	./$(BUILD)/longflow generate --chat --policy longflow --budget 256 --max-tokens 256 \
	  --prompt "What is 17 * 23?"

clean:
	rm -rf $(BUILD)
