# Device-to-device copy bandwidth (bytes read + written), for the decode targets' denominator.
import torch
x = torch.empty(2**28, dtype=torch.float32, device='cuda'); y = torch.empty_like(x)
for _ in range(3): y.copy_(x)
s = torch.cuda.Event(enable_timing=True); e = torch.cuda.Event(enable_timing=True)
s.record()
for _ in range(20): y.copy_(x)
e.record(); torch.cuda.synchronize()
ms = s.elapsed_time(e) / 20
print(f"copy 1 GiB: {ms:.3f} ms, {2 * x.numel() * 4 / ms / 1e6:.0f} GB/s read+write")
