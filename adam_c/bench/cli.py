"""cli.py: python -m adam_c.bench's command line: options, the header, which workloads run, the JSON file."""
import argparse
import datetime
import json
import os
import platform
import time

import adam_c
from adam_c import _core

from . import compressed, dropin, loop, mixed, step, threshold, torchloop
from .harness import (PROGRESS_AFTER_S, Progress, Settings, bytes_per_element, cpu_model, host_note, load_note,
                      optional_module, peak_rss_mb, set_threads, versions, wrap)
from .plot import draw_plot

DTYPES = ("float32", "float64")
WORKLOADS = ("ram", "cache", "call", "multi", "loop")
DESCRIPTION = ("adam_c against its memory floor, NumPy, torch and numba, interleaved in one process: time per step, "
               "GB/s and percent of the floor, for each workload and dtype.")


def print_header(info, vers, threads):
    print(f"adam_c benchmark, {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(wrap(f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs), {platform.system()} {platform.release()}"))
    print(wrap(f"adam_c {vers['adam_c']}: SIMD target {info['target']} (compiled {', '.join(info['targets'])}; "
               f"CPU supports {', '.join(info['supported_targets'])}), "
               f"threads {info['num_threads']}, parallel threshold {info['parallel_threshold']:,} float32 "
               "elements"))
    shown = [f"{k} {v}" for k, v in vers.items() if k != "adam_c" and v is not None]
    missing = [k for k, v in vers.items() if v is None]
    print(wrap(f"{', '.join(shown)}" + (f"; not installed: {', '.join(missing)}" if missing else "")))
    print(wrap(f"threads for adam_c, torch and numba: {threads}; {load_note()}"))
    print("DeepSpeed CPUAdam: skipped (not installable on this machine)")
    print(wrap("Bytes per element per step: 28 (float32), 56 (float64); the floor is the 4-read/3-write probe on "
               "the same table and threads as a step.", ""))
    print(wrap("adam_c/this < 1: adam_c is faster. IQR/2: half the interquartile range of the samples, relative to "
               "the median.", ""))


def plan(args, settings, dtypes):
    """The run's parts in order, as (label, estimated seconds), for the progress lines and their ETA."""
    if args.torch_dropin:
        return dropin.parts(dtypes, settings)
    if args.sweep_threshold:
        return threshold.parts(dtypes, settings)
    out = step.parts([w for w in args.workloads if w in STEP_WORKLOADS], dtypes, settings)
    if "loop" in args.workloads:
        out += loop.parts(settings)
    if "mixed" in args.workloads:
        out += mixed.parts(settings)
    if "compressed" in args.workloads:
        out += compressed.parts(settings)
    if "torchloop" in args.workloads and not getattr(args, "no_torch", False):
        out += torchloop.parts(settings)
    if args.quality:
        out.append(("quality", QUALITY_S[settings.quick]))
    if args.plot:
        out += step.sweep_parts(dtypes, settings)
    return out


STEP_WORKLOADS = ("ram", "cache", "call", "multi")
QUALITY_S = {False: 180.0, True: 90.0}  # adam_c.quality: an MLP and a char-LM trained three ways each


def durations_help():
    """--help's line on how long each part takes, from the same estimates the progress lines use."""
    full, quick = Settings(False), Settings(True)

    def total(parts):
        return sum(seconds for _, seconds in parts)

    each = [f"{w} ~{total(step.parts([w], ['float32'], full)):.0f} s" for w in STEP_WORKLOADS]
    each.append(f"loop ~{total(loop.parts(full)):.0f} s (once, float32)")
    each.append(f"mixed ~{total(mixed.parts(full)):.0f} s")
    each.append(f"compressed ~{total(compressed.parts(full)):.0f} s")
    default = plan(argparse.Namespace(torch_dropin=False, sweep_threshold=False, workloads=list(WORKLOADS),
                                      quality=False, plot=None), full, list(DTYPES))
    default_quick = plan(argparse.Namespace(torch_dropin=False, sweep_threshold=False, workloads=list(WORKLOADS),
                                            quality=False, plot=None), quick, list(DTYPES))
    return (f"Roughly how long each workload takes on an idle machine (per dtype unless said): {', '.join(each)}; "
            f"--plot adds ~{total(step.sweep_parts(['float32'], full)):.0f} s per dtype, --quality "
            f"~{QUALITY_S[False]:.0f} s, --torch-dropin alone ~{total(dropin.parts(['float32'], full)):.0f} s, "
            f"--sweep-threshold alone ~{total(threshold.parts(['float32'], full)):.0f} s per dtype. The default run "
            f"takes ~{total(default) / 60:.1f} min (--quick ~{total(default_quick) / 60:.1f} min); a loaded "
            f"machine is slower. Runs longer than {PROGRESS_AFTER_S:.0f} s report progress and the time left on "
            "stderr.")


# ---------------------------------------------------------------- entry point

def build_parser():
    parser = argparse.ArgumentParser(prog="python -m adam_c.bench", description=DESCRIPTION,
                                     epilog=durations_help())
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for adam_c, torch and numba (default: adam_c's own count, "
                             f"now {adam_c.get_num_threads()})")
    parser.add_argument("--dtype", choices=("float32", "float64", "both"), default="both",
                        help="the step workloads' dtype (default: both)")
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS + ("mixed", "compressed", "torchloop"),
                        default=list(WORKLOADS), metavar="NAME",
                        help=f"what to measure (default: {' '.join(WORKLOADS)}): ram (1 GB of tensors, "
                             "RAM-bound), cache (1e6 elements), call (1e4: per-call cost), multi (200 tensors), loop "
                             "(a matmul before every step, threads against serial and torch); not in the default "
                             "set: mixed (mixed precision against torch's recipes), compressed (float32, bfloat16 "
                             "and int8 optimizer state), torchloop (a torch MLP's training loop at 0.27M, 4.2M "
                             "and 16.8M params: adam_c.torch against torch's fused AdamW, ~3 min)")
    parser.add_argument("--quality", action="store_true",
                        help="also train with float32, bfloat16 and int8 state and compare final losses "
                             "(adam_c.quality; with --plot, the curves go to OUT-quality.png) (default: off)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer samples: each point timed for ~1 s instead of ~3 s (default: off)")
    parser.add_argument("--plot", metavar="OUT.png",
                        help="also sweep one tensor over 1e3..1e7 elements and plot ns/element against size, the "
                             "floor as a band (needs matplotlib; default: no plot)")
    parser.add_argument("--json", metavar="OUT.json", help="save all results as JSON (default: not saved)")
    parser.add_argument("--sweep-threshold", action="store_true",
                        help="only measure serial against parallel adam_c steps around the parallel threshold "
                             "(default: off)")
    parser.add_argument("--no-torch", action="store_true",
                        help="leave torch out even when it is installed (default: torch is measured if installed)")
    parser.add_argument("--torch-dropin", action="store_true",
                        help="only measure adam_c.torch.Adam against torch.optim.Adam(fused=True) (default: off)")
    return parser


def parse_args(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    most = _core.max_threads()
    if args.threads is not None and not 1 <= args.threads <= most:
        parser.error(f"--threads must be in 1..{most}, got {args.threads}")
    if args.torch_dropin or args.sweep_threshold:
        # those modes measure one thing: options of the full run would be ignored, so they are refused (the
        # threshold sweep takes --no-torch: it keeps torch from being imported to set its threads)
        mode = "--torch-dropin" if args.torch_dropin else "--sweep-threshold"
        ignored = [flag for flag, used in (("--torch-dropin", args.torch_dropin and mode != "--torch-dropin"),
                                           ("--workloads", args.workloads != list(WORKLOADS)),
                                           ("--no-torch", args.no_torch and args.torch_dropin), ("--plot", args.plot),
                                           ("--quality", args.quality)) if used]
        if ignored:
            parser.error(f"{mode} measures only its own comparison; it does not take {', '.join(ignored)}")
    if args.json:  # say so before minutes of measuring, not after
        folder = os.path.dirname(os.path.abspath(args.json))
        if os.path.isdir(args.json) or not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            parser.error(f"--json {args.json}: cannot write a file there")
    if args.plot and optional_module("matplotlib") is None:
        # say so before minutes of measuring, not after
        parser.error("--plot needs matplotlib, which is not installed (pip install matplotlib, or "
                     "pip install 'adam_c[bench]')")
    return args


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    settings = Settings(args.quick)
    dtypes = list(DTYPES) if args.dtype == "both" else [args.dtype]
    threads = args.threads if args.threads is not None else adam_c.get_num_threads()
    set_threads(threads, not args.no_torch)
    info = adam_c.cpu_info()
    vers = versions(not args.no_torch)
    print_header(info, vers, threads)
    out = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "cpu": cpu_model(),
           "cpu_info": info, "versions": vers, "threads": threads, "quick": args.quick}
    progress = Progress(plan(args, settings, dtypes))
    done = progress.done

    if args.torch_dropin:
        out["torch_dropin"] = dropin.run_torch_dropin(dtypes, settings, done)
    elif args.sweep_threshold:
        out["threshold_sweep"] = threshold.sweep_threshold(dtypes, settings, done)
    else:
        skipped = {}
        if args.no_torch:
            skipped.update({"torch fused": "--no-torch", "torch foreach": "--no-torch"})
        impl_names = list(step.IMPLEMENTATIONS)
        step.check_numpy_reference(dtypes)
        results = []
        for dtype in dtypes:
            for name in args.workloads:
                if name not in STEP_WORKLOADS:
                    continue
                workload_started = time.perf_counter()
                records = step.run_workload(name, dtype, settings, impl_names, skipped)
                results.extend(records)
                step.print_table(records, f"{dtype} | {step.describe_workload(name, step.workload_sizes(name, dtype))}"
                                          f" | {bytes_per_element(dtype)} B/el | "
                                          f"{time.perf_counter() - workload_started:.0f} s")
                done(step.workload_label(name, dtype))
        if "loop" in args.workloads:
            results.extend(loop.run_training_loop(settings, skipped, threads, done))
        if "mixed" in args.workloads:
            results.extend(mixed.run_mixed(settings, skipped, threads, done))
        if "compressed" in args.workloads:
            out["compressed"] = compressed.run_compressed(settings, threads)
            done(compressed.PART_LABEL)
        if "torchloop" in args.workloads:
            if args.no_torch:
                skipped["torchloop"] = "--no-torch"
            else:
                out["torchloop"] = torchloop.run_torchloop(settings, done)
        if args.quality:
            from adam_c import quality
            quality_args = ["--quick"] if args.quick else []
            if args.plot:
                quality_args += ["--plot", os.path.splitext(args.plot)[0] + "-quality.png"]
            out["quality_ok"] = quality.main(quality_args) == 0
            done("quality")
        for impl, why in skipped.items():
            print(wrap(f"{impl}: skipped ({why})"))
        out["results"] = results
        out["skipped"] = skipped
        if args.plot:
            print("\nsize sweep (one tensor) for the plot:")
            out["size_sweep"] = step.run_size_sweep(dtypes, settings, impl_names, skipped, done)
            out["plot_caption"] = host_note()
            draw_plot(out["size_sweep"], args.plot, threads, out["plot_caption"])
            print(f"plot written to {args.plot}")

    elapsed = time.perf_counter() - started
    print(f"\ntotal {elapsed:.0f} s, peak RSS {peak_rss_mb():,.0f} MB, {load_note()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
        print(f"results written to {args.json}")
    return 0
