# FP32 SDPA in PyTorch on the same shapes, for context (CUDA events, median of runs).
import torch, torch.nn.functional as F, statistics, json, sys
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
shapes = [(1,8,8,512,512,64,False),(1,8,8,1024,1024,64,False),(1,8,8,1024,1024,64,True),
          (4,12,12,256,256,64,False),(1,32,32,2048,2048,128,True),(1,32,32,4096,4096,128,False),
          (1,8,8,1,4096,64,False),(1,32,8,1,8192,128,False)]
for (b,hq,hk,sq,sk,d,causal) in shapes:
    q=torch.randn(b,hq,sq,d,device='cuda'); k=torch.randn(b,hk,sk,d,device='cuda'); v=torch.randn(b,hk,sk,d,device='cuda')
    kw=dict(is_causal=causal, enable_gqa=(hq!=hk))
    for _ in range(3): F.scaled_dot_product_attention(q,k,v,**kw)
    ts=[]
    for _ in range(20):
        s=torch.cuda.Event(enable_timing=True); e=torch.cuda.Event(enable_timing=True)
        s.record(); F.scaled_dot_product_attention(q,k,v,**kw); e.record(); torch.cuda.synchronize(); ts.append(s.elapsed_time(e))
    ms=statistics.median(ts); fl=4*b*hq*sq*sk*d*(0.5 if causal and sq==sk else 1)
    print(json.dumps(dict(shape=f"{b}x{hq}/{hk}x{sq}x{sk}x{d}", causal=causal, median_ms=round(ms,4), gflops=round(fl/ms/1e6,1), kv_gbs=round(2*b*hk*sk*d*4/ms/1e6,1))))
