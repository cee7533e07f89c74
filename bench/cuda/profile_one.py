#!/usr/bin/env python3
"""Run the fused kernel a few times on one shape, for ncu:
  ncu --clock-control none -k regex:'attn_kernel|combine_kernel' python3 bench/cuda/profile_one.py LIB B S LAUNCHES HINTS
"""
import math
import sys

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import bench_attention as ba  # noqa: E402

lib, B, S, launches, hints = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
kern = ba.Kernel(lib)
q = torch.randn(B, ba.H, ba.D, device="cuda", dtype=torch.float16)
k = torch.randn(B, ba.HKV, S, ba.D, device="cuda", dtype=torch.float16)
v = torch.randn_like(k)
pos = torch.arange(S, device="cuda", dtype=torch.int32).repeat(B, 1).contiguous()
out = torch.empty(B, ba.H, ba.D, device="cuda", dtype=torch.float16)
nxt = torch.empty(B, device="cuda", dtype=torch.int32)
score = torch.empty(B, S, device="cuda", dtype=torch.float32)
desc = ba.make_desc(B, S, ba.F16, "longflow", hints=hints, launches=launches)
ws = kern.workspace(desc)
a = ba.Args(q.data_ptr(), k.data_ptr(), v.data_ptr(), ba.HKV * S * ba.D, pos.data_ptr(), S, None, out.data_ptr(),
            score.data_ptr(), None, nxt.data_ptr(), None, 0, 0, 0.0, ws.data_ptr(), ws.numel(), 0)
for _ in range(3):
    kern.call(desc, a)
torch.cuda.synchronize()
print("plan", kern.plan(desc), "scale", 1 / math.sqrt(ba.D))
