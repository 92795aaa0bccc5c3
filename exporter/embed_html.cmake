# cmake -DIN=<file.html> -DOUT=<file.h> -DNAME=<identifier> -P embed_html.cmake
# Writes a header holding the file as one raw string literal, so the status
# page is edited as plain HTML and compiled into the binary (no files at run time).
file(READ ${IN} content)
string(FIND "${content}" ")ENGRAM_HTML\"" bad)
if(NOT bad EQUAL -1)
  message(FATAL_ERROR "${IN} contains the raw-string delimiter )ENGRAM_HTML\"")
endif()
file(WRITE ${OUT}.tmp "// Generated from ${IN} by exporter/embed_html.cmake. Do not edit.\n#pragma once\n\ninline constexpr const char ${NAME}[] = R\"ENGRAM_HTML(${content})ENGRAM_HTML\";\n")
configure_file(${OUT}.tmp ${OUT} COPYONLY)  # rewrites only if changed
file(REMOVE ${OUT}.tmp)
