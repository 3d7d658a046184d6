import functools, time, torch, sys
torch.set_num_threads(1)
from lifelong_kd import build_stream, StreamOptions, build_model, TrainConfig, LwF, Evaluator
from lifelong_kd.strategies.compress import Compress
from lifelong_kd.compression_run import run_compression
from lifelong_kd.pipeline import seed_everything
ts, ep, tw, lr, bs = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
spec = sys.argv[6] if len(sys.argv) > 6 else "mlp:16"
s = build_stream(sys.argv[7] if len(sys.argv) > 7 else "split-digits", StreamOptions(scenario="task", train_size=ts))
for seed in range(4):
    seed_everything(seed)
    t = build_model("mlp:200,200", s.input_shape, s.n_heads, s.n_outputs)
    st = build_model(spec, s.input_shape, s.n_heads, s.n_outputs)
    t0=time.time()
    r = run_compression(s, t, st, Compress(teacher_weight=tw), LwF(), TrainConfig(epochs=ep, batch_size=bs, lr=lr, progress=False, seed=seed),
       functools.partial(Evaluator, compression=False), sparsities=(), quantize=False, alone=True)
    rows={x["model"]:x["average_accuracy"] for x in r["summary"]}
    print(sys.argv[1:], seed, round(time.time()-t0,1), {k:round(v,3) for k,v in rows.items()}, flush=True)
