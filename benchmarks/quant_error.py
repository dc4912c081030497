import numpy as np
rng=np.random.default_rng(0)
def f16(x): return x.astype(np.float16).astype(np.float64)
def q_asym(w,G):
    r=w.reshape(-1,G); mn=r.min(1,keepdims=True); mx=r.max(1,keepdims=True)
    s=f16((mx-mn)/15); s[s==0]=1; m=f16(mn)
    q=np.clip(np.rint((r-m)/s),0,15); return (q*s+m).reshape(w.shape)
def q_sym(w,G):
    r=w.reshape(-1,G); a=np.abs(r).max(1,keepdims=True)
    s=f16(a/7.5); s[s==0]=1   # levels -8..7 shifted: use q in [-8,7]
    q=np.clip(np.rint(r/s),-8,7); return (q*s).reshape(w.shape)
def q_sym7(w,G):
    r=w.reshape(-1,G); a=np.abs(r).max(1,keepdims=True)
    s=f16(a/7); s[s==0]=1
    q=np.clip(np.rint(r/s),-7,7); return (q*s).reshape(w.shape)
N,K=1024,4096
dists={'gauss':rng.standard_normal((N,K))*0.02,
 't5':rng.standard_t(5,(N,K))*0.015,
 't3+rowscale':rng.standard_t(3,(N,K))*0.01*np.exp(rng.standard_normal((N,1))*0.3),
}
# outlier input channels as in LLMs: some columns larger
w=rng.standard_normal((N,K))*0.02; cols=rng.choice(K,40,replace=False); w[:,cols]*=6; dists['gauss+outlier_cols']=w
x=rng.standard_normal((64,K))
print("%-20s %-6s %5s %12s %12s"%("weights","scheme","G","NMSE(W)","NMSE(xW^T)"))
for name,w in dists.items():
  for G in (32,64,128,256):
    for sn,fn in (('asym',q_asym),('sym',q_sym),('sym7',q_sym7)):
      d=fn(w,G); e=np.sum((d-w)**2)/np.sum(w**2)
      y=x@w.T; yd=x@d.T; e2=np.sum((y-yd)**2)/np.sum(y**2)
      print("%-20s %-6s %5d %12.5f %12.5f"%(name,sn,G,e,e2))
