# capi.pxd: the C API of adam_c for Cython users: `from adam_c.capi cimport adamc_step_f32, adamc_hparams`.
#
# Every function is declared nogil, so your own nogil loops can call the C step directly. Build your extension
# with adam_c.get_include() on the include path and link the library from adam_c.get_library_dir() (or use
# find_package(adam_c CONFIG) with CMAKE_PREFIX_PATH=adam_c.get_cmake_dir() and the target adam_c::adam_c).
# Initialise the structs with adamc_hparams_init / adamc_tensor_init before filling them in (see adam_c.h).
# The declarations are those of adam_c._core (one list, so they cannot drift apart); only externs, so a cimport
# of this file imports nothing at run time.
from adam_c._core cimport *
