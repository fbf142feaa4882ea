# Links gRPC, protobuf, abseil, OpenSSL, c-ares, re2 and RocksDB's
# compression libraries from their static archives (Debian ships both), so
# that cgoheap and cgoheapd load a handful of shared objects instead of 66.
#
# Why: `cgoheap run -- true` spent about 12 ms of its ~45 ms loading those
# 66 libraries: mapping each (the kernel's page tables) and resolving some
# 17,000 symbol references among them (ld.so), for every run of every
# program. The same binary linked from the archives starts in 7 ms instead
# of 19 ms (`perf stat -r 30 build/bin/cgoheap --version`). glibc, libstdc++,
# elfutils and libunwind stay shared, and prometheus-cpp (Debian ships no
# archive of it). A package without an archive stays shared too.
#
# Only our executables link these packages (the agent, preloaded into
# other people's programs, links none of them), so swapping the imported
# targets' locations here changes nothing else.

set(_cgoheap_static_packages
    "^(absl|gRPC|protobuf|OpenSSL|c-ares|ZLIB|Snappy|lz4|zstd|BZip2|gflags)::")

# The archive beside a shared object (libfoo.so or libfoo.so.1.2 ->
# libfoo.a), or nothing when the package installed none.
function(_cgoheap_archive_of path out)
  set(${out} "" PARENT_SCOPE)
  # (${CMAKE_MATCH_1} is expanded before MATCHES runs: two ifs.)
  if(path MATCHES "^(.*/lib[^/]+)\\.so(\\.[0-9.]+)?$")
    if(EXISTS "${CMAKE_MATCH_1}.a")
      set(${out} "${CMAKE_MATCH_1}.a" PARENT_SCOPE)
    endif()
  endif()
endfunction()

function(cgoheap_prefer_static_archives)
  get_directory_property(targets IMPORTED_TARGETS)
  set(swapped 0)
  foreach(t IN LISTS targets)
    if(NOT t MATCHES "${_cgoheap_static_packages}")
      continue()
    endif()
    get_target_property(type ${t} TYPE)
    if(NOT type MATCHES "^(SHARED|UNKNOWN)_LIBRARY$")
      continue()
    endif()
    set(props IMPORTED_LOCATION)
    get_target_property(configs ${t} IMPORTED_CONFIGURATIONS)
    if(configs)
      foreach(c IN LISTS configs)
        list(APPEND props IMPORTED_LOCATION_${c})
      endforeach()
    endif()
    foreach(p IN LISTS props)
      get_target_property(location ${t} ${p})
      if(location)
        _cgoheap_archive_of("${location}" archive)
        if(archive)
          set_target_properties(${t} PROPERTIES ${p} "${archive}")
          math(EXPR swapped "${swapped} + 1")
        endif()
      endif()
    endforeach()
  endforeach()

  # Two packages name their libraries by hand rather than by target.
  if(TARGET re2::re2)  # from pkg-config: -L/usr/lib/... -lre2
    get_target_property(libs re2::re2 INTERFACE_LINK_LIBRARIES)
    find_library(_cgoheap_re2_archive NAMES libre2.a)
    if(libs AND _cgoheap_re2_archive)
      list(TRANSFORM libs REPLACE "^-lre2$" "${_cgoheap_re2_archive}")
      set_target_properties(re2::re2 PROPERTIES INTERFACE_LINK_LIBRARIES "${libs}")
    endif()
  endif()
  if(TARGET RocksDB::rocksdb)  # libbz2.so by path
    get_target_property(libs RocksDB::rocksdb INTERFACE_LINK_LIBRARIES)
    set(fixed "")
    foreach(l IN LISTS libs)
      _cgoheap_archive_of("${l}" archive)
      if(archive)
        list(APPEND fixed "${archive}")
      else()
        list(APPEND fixed "${l}")
      endif()
    endforeach()
    set_target_properties(RocksDB::rocksdb PROPERTIES INTERFACE_LINK_LIBRARIES "${fixed}")
  endif()
  message(STATUS "cgoheap: linking ${swapped} imported libraries from their static archives")
endfunction()
