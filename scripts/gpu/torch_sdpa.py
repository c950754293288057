# PyTorch SDPA on the same shapes as scripts/gpu/bench.sh times with wgattn, for context:
# default backends (whatever PyTorch picks for the dtype), CUDA events, median of 20 runs.
# Usage: python3 torch_sdpa.py [f32|f16 ...]   (default: f32 f16). One JSON object per line.
import torch, torch.nn.functional as F, statistics, json, sys
shapes = [(1,8,8,512,512,64,False),(1,8,8,1024,1024,64,False),(1,8,8,1024,1024,64,True),
          (4,12,12,256,256,64,False),(1,32,32,2048,2048,128,True),(1,8,8,1,4096,64,False),
          (1,32,32,4096,4096,128,False),(1,32,32,4096,4096,128,True),
          (1,32,8,1,8192,128,False),(1,32,8,1,32768,128,False)]
dtypes = sys.argv[1:] or ["f32", "f16"]
for name in dtypes:
    dt = {"f32": torch.float32, "f16": torch.float16}[name]
    for (b,hq,hk,sq,sk,d,causal) in shapes:
        q=torch.randn(b,hq,sq,d,device='cuda',dtype=dt); k=torch.randn(b,hk,sk,d,device='cuda',dtype=dt); v=torch.randn(b,hk,sk,d,device='cuda',dtype=dt)
        kw=dict(is_causal=causal, enable_gqa=(hq!=hk))
        for _ in range(3): F.scaled_dot_product_attention(q,k,v,**kw)
        ts=[]
        for _ in range(20):
            s=torch.cuda.Event(enable_timing=True); e=torch.cuda.Event(enable_timing=True)
            s.record(); F.scaled_dot_product_attention(q,k,v,**kw); e.record(); torch.cuda.synchronize(); ts.append(s.elapsed_time(e))
        ms=statistics.median(ts); fl=4*b*hq*sq*sk*d*(0.5 if causal and sq==sk else 1)
        esize = 2 if dt == torch.float16 else 4
        print(json.dumps(dict(dtype=name, shape=f"{b}x{hq}/{hk}x{sq}x{sk}x{d}", causal=causal, median_ms=round(ms,4),
                              gflops=round(fl/ms/1e6,1), kv_gbs=round(2*b*hk*sk*d*esize/ms/1e6,1))), flush=True)
