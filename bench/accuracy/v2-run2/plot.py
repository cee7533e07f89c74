#!/usr/bin/env python3
"""accuracy-all.png from table.md (README.md's table: every policy and variant by budget)."""
import os
import matplotlib
HERE = os.path.dirname(os.path.abspath(__file__))
matplotlib.use('Agg')
import matplotlib.pyplot as plt
rows=[l for l in open(os.path.join(HERE, 'table.md')).read().split('\n')[2:] if l.strip()]
hdr=['5%','10%','20%','40%','60%','80%']
pols=['longflow','tova','streaming','h2o','vatp','knorm','longflow+prompt','longflow+recent64','longflow+prompt+recent64','tova+prompt','streaming+prompt','h2o+prompt']
cols=dict(zip(pols,plt.cm.tab20.colors[::2]+plt.cm.tab20.colors[1::2]))
fig,axs=plt.subplots(1,3,figsize=(16,4.8),sharey=True)
for ax,f in zip(axs,['fib','mul','gcd']):
    for l in rows:
        c=[x.strip() for x in l.strip('|').split('|')]
        if c[0]!=f or c[1]=='full': continue
        pts=[(float(b[:-1]),float(v[:-1])) for b,v in zip(hdr,c[2:8]) if v]
        if not pts: continue
        xs,ys=zip(*pts)
        ax.plot(xs,ys,'--' if '+' in c[1] else '-',marker='s' if '+' in c[1] else 'o',color=cols[c[1]],label=c[1])
    ax.axhline(100,color='k',lw=0.8,ls=':',label='full cache')
    ax.set_title(f'{f} (200 problems)'); ax.set_xlabel('budget (% of full-cache output)'); ax.set_xticks([5,10,20,40,60,80])
axs[0].set_ylabel('answers right (%)')
h,l=axs[0].get_legend_handles_labels()
fig.legend(h,l,loc='center right',fontsize=8)
fig.suptitle('tiny-reasoner-v2 run 2, H200, greedy: every policy, and variants that keep the question (+prompt = --sinks 106, +recent64 = --recent 64)')
fig.tight_layout(rect=(0,0,0.86,1)); fig.savefig(os.path.join(HERE, 'accuracy-all.png'),dpi=90)
