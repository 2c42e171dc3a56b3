# ctest install_consumer: install blendfuse from a build tree into a scratch prefix, then
# configure, build and run tests/consumer against it, as a user of find_package(blendfuse) would.
#
#   cmake -DBF_BUILD_DIR=<blendfuse build> -DBF_WORK_DIR=<scratch dir> [-DBF_CONFIG=<config>]
#         [-DBF_WITH_CUDA=ON -DBF_CUDA_LIB=<libblendfuse_cuda.a>] [-DBF_GENERATOR=...] [-DBF_CXX_COMPILER=...] [-DBF_CXX_LAUNCHER=...]
#         -P run_install_consumer.cmake
#
# Installs only the components a library user needs (blendfuse_dev, plus blendfuse_cuda when the
# CUDA backend was built), so the CLI need not be built. The scratch dir is emptied first and
# removed after a pass; after a failure it is kept for inspection (the next run empties it).
# Reads no stdin and needs no terminal (CI=true is fine).
cmake_minimum_required(VERSION 3.20)

foreach(v BF_BUILD_DIR BF_WORK_DIR)
  if(NOT ${v})
    message(FATAL_ERROR "run_install_consumer.cmake: -D${v}=... is required")
  endif()
endforeach()
get_filename_component(_consumer_src "${CMAKE_CURRENT_LIST_DIR}" ABSOLUTE)
set(_prefix "${BF_WORK_DIR}/prefix")
set(_build "${BF_WORK_DIR}/build")
file(REMOVE_RECURSE "${BF_WORK_DIR}")
file(MAKE_DIRECTORY "${BF_WORK_DIR}")

set(_config_args "")
if(BF_CONFIG)
  set(_config_args --config "${BF_CONFIG}")
endif()

function(bf_step what)
  message(STATUS "install_consumer: ${what}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "install_consumer: ${what} failed (${rc}); files kept in ${BF_WORK_DIR}")
  endif()
endfunction()

set(_components blendfuse_dev)
if(BF_WITH_CUDA)
  if(NOT EXISTS "${BF_CUDA_LIB}")
    message(FATAL_ERROR "install_consumer: blendfuse was configured with the CUDA backend but its "
            "library is not built (${BF_CUDA_LIB}); build it first: "
            "cmake --build ${BF_BUILD_DIR} --target blendfuse_cuda")
  endif()
  list(APPEND _components blendfuse_cuda)
endif()
foreach(c IN LISTS _components)
  bf_step("install component ${c} into ${_prefix}"
          "${CMAKE_COMMAND}" --install "${BF_BUILD_DIR}" --prefix "${_prefix}" --component ${c} ${_config_args})
endforeach()

set(_configure_args -S "${_consumer_src}" -B "${_build}"
    "-DCMAKE_PREFIX_PATH=${_prefix}"
    "-DBF_CONSUMER_EXPECT_PREFIX=${_prefix}"
    -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
if(BF_WITH_CUDA)
  list(APPEND _configure_args -DBF_CONSUMER_CUDA=ON)
endif()
if(BF_GENERATOR)
  list(APPEND _configure_args -G "${BF_GENERATOR}")
endif()
if(BF_CONFIG)
  list(APPEND _configure_args "-DCMAKE_BUILD_TYPE=${BF_CONFIG}")
endif()
if(BF_CXX_COMPILER)
  list(APPEND _configure_args "-DCMAKE_CXX_COMPILER=${BF_CXX_COMPILER}")
endif()
if(BF_CXX_LAUNCHER)
  list(APPEND _configure_args "-DCMAKE_CXX_COMPILER_LAUNCHER=${BF_CXX_LAUNCHER}")
endif()
bf_step("configure the consumer" "${CMAKE_COMMAND}" ${_configure_args})
bf_step("build the consumer" "${CMAKE_COMMAND}" --build "${_build}" ${_config_args})

# Multi-config generators put the executable in a folder named after the configuration.
set(_app "")
foreach(candidate "${_build}/app" "${_build}/${BF_CONFIG}/app" "${_build}/app.exe" "${_build}/${BF_CONFIG}/app.exe")
  if(NOT _app AND EXISTS "${candidate}" AND NOT IS_DIRECTORY "${candidate}")
    set(_app "${candidate}")
  endif()
endforeach()
if(NOT _app)
  message(FATAL_ERROR "install_consumer: no app executable under ${_build}")
endif()
bf_step("run ${_app}" "${_app}")

file(REMOVE_RECURSE "${BF_WORK_DIR}")
message(STATUS "install_consumer: passed")
