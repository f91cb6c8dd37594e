# fuzz_gguf: kvrun's GGUF reader and the tokenizer built from the file's metadata (issue 5).
# The reader's sources are compiled into the target (not linked from kvrunlib) so that libFuzzer's
# coverage instrumentation covers them. Seeds: tests/fuzz/seeds/fuzz_gguf/, made by
# tests/model/make_fuzz_seeds.py.
set(_kvrun ${CMAKE_SOURCE_DIR}/tools/kvrun)
kvd_add_fuzz(fuzz_gguf ${CMAKE_SOURCE_DIR}/tests/model/fuzz_gguf.c ${_kvrun}/gguf.c ${_kvrun}/tok.c)
target_include_directories(fuzz_gguf PRIVATE ${_kvrun})
