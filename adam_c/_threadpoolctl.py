"""adam_c's threadpoolctl controller: threadpool_info() lists adam_c, threadpool_limits() sets its default threads."""
from . import _core


def register() -> bool:
    """Registers the controller with threadpoolctl if it is installed (3.5 or newer: the first with a public
    `register`); returns whether it did. Called once, when adam_c is imported."""
    try:
        import threadpoolctl  # type: ignore[import-untyped,import-not-found,unused-ignore]  # optional
        base, register_controller = threadpoolctl.LibController, threadpoolctl.register
    except (ImportError, AttributeError):
        return False

    class AdamCController(base):  # type: ignore[misc,valid-type]
        """The thread count adam_c's steps use when adam_c.set_num_threads has set none (OMP_NUM_THREADS, read at
        import, or the CPU count). user_api "openmp": adam_c follows OMP_NUM_THREADS as an OpenMP runtime does,
        so threadpool_limits(n, user_api="openmp") limits it too."""
        user_api = "openmp"
        internal_api = "adam_c"
        # threadpoolctl finds libraries among those loaded by file name: adam_c's C library is linked into its
        # extension module adam_c/_core.<abi>.so, told apart from other modules named _core by its symbols
        filename_prefixes = ("_core",)
        check_symbols = ("adamc_get_num_threads", "adamc_set_num_threads")

        def get_num_threads(self) -> int:
            return _core.get_default_num_threads()

        def set_num_threads(self, num_threads: int) -> None:
            _core.set_default_num_threads(max(1, min(int(num_threads), _core.max_threads())))

        def get_version(self) -> str:
            return _core.version()

    register_controller(AdamCController)
    return True
