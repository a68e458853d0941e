"""Training-step time of MODA and MwT as ratios to standard training, measured side by side.

Synthetic CIFAR-10-shaped batches (3×32×32, batch 128) through the trainer's own step
(``moda_core.train.train_step``: the method's forward pass and loss terms, backward, SGD step) for
VGG16, ResNet-18 and MobileNet, with models prepared by each method exactly as ``train`` prepares
them. Standard, MODA and MwT steps are interleaved round by round so that drift hits all three alike;
medians are reported. With ``--json`` stdout is ``{model: {"moda_ratio", "mwt_ratio"}, …, "device": …}``, the
object ``--out`` writes (the Compare page reads assets/results/train_overhead.json). ``--quick`` (width 0.25, few
repeats) stays under two minutes on a CPU.

    python -m bench.train_overhead [--quick] [--json] [--repeats 10] [--width 1.0] [--out FILE.json]
"""
from __future__ import annotations

import statistics
import time

import torch

from bench.common import METHODS, BenchParser, device_name, log, show
from moda_core.comparison import write_train_overhead
from moda_core.methods import method_of
from moda_core.models import build_model
from moda_core.train import TrainConfig, resolve_device, start_steps, train_step


def make_step(model_name: str, method: str, width: float, device: torch.device):
    config = TrainConfig(model=model_name, width=width, track_modular_terms=False, **METHODS[method])
    trainer = method_of(config)
    torch.manual_seed(0)
    model = trainer.prepare(build_model(model_name, 3, 32, 10, width))
    model.to(device).train()
    channels_last = device.type == "cuda"
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    generator = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(128, 3, 32, 32, device=device, generator=generator)
    y = torch.randint(0, 10, (128,), device=device, generator=generator)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    step_function = start_steps(trainer, config, model, autocast=autocast)

    def step() -> None:
        train_step(step_function, optimizer, x, y)

    return step


def timed(step, device: torch.device, inner: int) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(inner):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - started) / inner


def main() -> None:
    parser = BenchParser(__doc__, quick={"width": 0.25, "repeats": 4}, out="write the result here as JSON")
    parser.add_argument("--models", nargs="+", default=["vgg16", "resnet18", "mobilenet"])
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=10, help="interleaved rounds")
    parser.add_argument("--inner", type=int, default=1, help="steps per timing")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    if device.type == "cuda" and args.inner == 1:
        args.inner = 10
    result: dict = {}
    lines = []
    for model_name in args.models:
        steps = {method: make_step(model_name, method, args.width, device) for method in METHODS}
        for step in steps.values():  # warm-up
            timed(step, device, 2)
        seconds: dict[str, list[float]] = {method: [] for method in METHODS}
        for _ in range(args.repeats):
            for method, step in steps.items():
                seconds[method].append(timed(step, device, args.inner))
        median = {method: statistics.median(values) for method, values in seconds.items()}
        result[model_name] = {"moda_ratio": median["moda"] / median["standard"],
                              "mwt_ratio": median["mwt"] / median["standard"],
                              "moda_vs_mwt": median["moda"] / median["mwt"],
                              "seconds_per_step": median}
        lines.append(f"{model_name} (width {args.width}): standard {median['standard'] * 1000:.1f} ms, "
                     f"MODA {median['moda'] * 1000:.1f} ms ({result[model_name]['moda_ratio']:.2f}x), "
                     f"MwT {median['mwt'] * 1000:.1f} ms ({result[model_name]['mwt_ratio']:.2f}x); "
                     f"MODA/MwT {result[model_name]['moda_vs_mwt']:.2f}")
        log(lines[-1])
    result["device"] = device_name(device)
    result["width"] = args.width
    if args.out:
        write_train_overhead(args.out, result)
        log(f"wrote {args.out}")
    show(args, result, "\n".join(lines))


if __name__ == "__main__":
    main()
