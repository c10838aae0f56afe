# Runs statetune-loadgen --spawn briefly and checks its JSON: every scenario measured, tokens
# generated, no failed request or upload, upload->servable timed for every upload; one scenario
# (http:uniform) goes through the HTTP API beside the gRPC ones.
file(REMOVE ${OUT})
execute_process(
  COMMAND ${LOADGEN} --spawn --server-bin ${SERVER} --engine-bin ${ENGINE} --tokenizer ${TOKENIZER}
          --d-model 64 --n-layer 2 --clients 4 --adapters 4 --duration 0.5 --rounds 1 --warmup 0.3
          --upload-rounds 2 --adapter-variants 1
          --scenarios none,identical,uniform,distinct,skewed,http:uniform --prompt-len 8 --max-tokens 6 --server-threads 1 --json ${OUT}
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
message(STATUS "${out}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "statetune-loadgen exited with ${rc}:\n${err}")
endif()
file(READ ${OUT} j)
string(JSON failures GET "${j}" failures)
if(NOT failures EQUAL 0)
  message(FATAL_ERROR "failures: ${failures}")
endif()
string(JSON uploads GET "${j}" upload upload_to_first_token_ms n)
if(NOT uploads EQUAL 8)
  message(FATAL_ERROR "expected 8 timed uploads (4 adapters x 2 rounds), got ${uploads}")
endif()
foreach(s none identical uniform distinct skewed http:uniform)
  string(JSON tps GET "${j}" scenarios ${s} tokens_per_s)
  string(JSON ok GET "${j}" scenarios ${s} requests_ok)
  string(JSON errors GET "${j}" scenarios ${s} errors)
  string(JSON ttft GET "${j}" scenarios ${s} ttft_ms p50)
  if(NOT tps GREATER 0 OR NOT ok GREATER 0 OR NOT errors EQUAL 0 OR NOT ttft GREATER 0)
    message(FATAL_ERROR "scenario ${s}: tokens/s ${tps}, requests ${ok}, errors ${errors}, ttft p50 ${ttft}")
  endif()
endforeach()
string(JSON used GET "${j}" scenarios distinct distinct_adapters_used)
if(NOT used EQUAL 4)
  message(FATAL_ERROR "distinct: 4 clients over 4 adapters used ${used} adapters")
endif()
string(JSON used GET "${j}" scenarios identical distinct_adapters_used)
if(NOT used EQUAL 1)
  message(FATAL_ERROR "identical used ${used} adapters")
endif()
string(JSON used GET "${j}" scenarios none distinct_adapters_used)
if(NOT used EQUAL 0)
  message(FATAL_ERROR "none used ${used} adapters")
endif()
