"""python -m adam_c.config (or adam_c-config): compiler and linker flags and directories for building against adam_c."""
import argparse
import os
import re
import sys

# What each option prints, in the order given on the command line, one line each; the flags come from the package's
# own pkg-config files (adam_c.pc, adam_c_static.pc), so this command and pkg-config always agree.
OPTIONS = (
    ("--cflags", "compiler flags: -I for adam_c.h"),
    ("--libs", "linker flags for the shared library (-L... -ladam_c); add --rpath to find it at run time"),
    ("--libs-static", "linker flags for the static library: libadam_c.a by path, then what it needs "
                      "(-pthread, -lm, -ldl)"),
    ("--rpath", "-Wl,-rpath,<libdir>: lets a program linked with --libs find libadam_c.so when it runs"),
    ("--cmake-dir", "the directory holding adam_cConfig.cmake (for -Dadam_c_DIR=...)"),
    ("--pkgconfig-dir", "the directory holding adam_c.pc and adam_c_static.pc (for PKG_CONFIG_PATH)"),
    ("--includedir", "the directory holding adam_c.h"),
    ("--libdir", "the directory holding libadam_c.so and libadam_c.a"),
    ("--version", "adam_c's version"),
)


def read_pc(path):
    """The fields (Cflags, Libs, ...) of a pkg-config file, its ${variables} expanded as pkg-config does
    (${pcfiledir} is the file's directory)."""
    variables = {"pcfiledir": os.path.dirname(os.path.abspath(path))}
    fields = {}

    def expand(text):
        return re.sub(r"\$\{([A-Za-z0-9_.]+)\}", lambda m: variables.get(m.group(1), ""), text)

    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            field = re.match(r"^([A-Za-z0-9_.]+):\s*(.*)$", line)
            variable = re.match(r"^([A-Za-z0-9_.]+)\s*=\s*(.*)$", line)
            if field:
                fields[field.group(1)] = expand(field.group(2))
            elif variable:
                variables[variable.group(1)] = expand(variable.group(2))
    return fields


def _normalized(flags):
    """Flags with their paths normalised (prefix/lib/pkgconfig/../../include -> prefix/include)."""
    out = []
    for flag in flags.split():
        if flag.startswith(("-I", "-L")) and len(flag) > 2:
            flag = flag[:2] + os.path.normpath(flag[2:])
        elif os.path.isabs(flag):
            flag = os.path.normpath(flag)
        out.append(flag)
    return " ".join(out)


def answer(option):
    """What `option` prints."""
    import adam_c
    if option == "--version":
        return adam_c.__version__
    if option == "--cmake-dir":
        return adam_c.get_cmake_dir()
    if option == "--pkgconfig-dir":
        return adam_c.get_pkgconfig_dir()
    if option == "--includedir":
        return adam_c.get_include()
    if option == "--libdir":
        return adam_c.get_library_dir()
    if option == "--rpath":
        return f"-Wl,-rpath,{adam_c.get_library_dir()}"
    pc = os.path.join(adam_c.get_pkgconfig_dir(), "adam_c_static.pc" if option == "--libs-static" else "adam_c.pc")
    fields = read_pc(pc)
    return _normalized(fields["Cflags"] if option == "--cflags" else fields["Libs"])


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="adam_c-config", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Compiler and linker flags and directories for building C, C++ or Cython code against this "
                    "adam_c\n(the same as `python -m adam_c.config`).",
        epilog="Each option asked for prints one line, in the order given. Examples:\n"
               "  cc app.c $(adam_c-config --cflags --libs --rpath)        # shared library\n"
               "  cc app.c $(adam_c-config --cflags --libs-static)         # static library\n"
               "  cmake -S . -B build -Dadam_c_DIR=\"$(adam_c-config --cmake-dir)\"\n"
               "  PKG_CONFIG_PATH=\"$(adam_c-config --pkgconfig-dir)\" pkg-config --libs adam_c")
    for flag, text in OPTIONS:
        parser.add_argument(flag, dest="asked", action="append_const", const=flag, help=text)
    args = parser.parse_args(argv)
    if not args.asked:  # as numpy-config and pybind11-config do
        parser.print_help()
        return 0
    try:
        lines = [answer(flag) for flag in args.asked]
    except (FileNotFoundError, KeyError) as exc:
        print(f"adam_c-config: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
