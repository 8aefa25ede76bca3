"""adam_c's threadpoolctl controller: threadpool_info() lists adam_c, threadpool_limits() sets its default threads."""
from . import _core

try:  # optional; 3.5 is the first with a public `register`
    import threadpoolctl as _threadpoolctl  # type: ignore[import-untyped,import-not-found,unused-ignore]
    _LibController = _threadpoolctl.LibController
    _register = _threadpoolctl.register
except (ImportError, AttributeError):
    _threadpoolctl = None


if _threadpoolctl is not None:
    class AdamCController(_LibController):  # type: ignore[misc,valid-type,unused-ignore]
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


def register() -> bool:
    """Registers AdamCController with threadpoolctl if it is installed; returns whether it did. adam_c's import
    calls it once."""
    if _threadpoolctl is None:
        return False
    _register(AdamCController)
    return True
