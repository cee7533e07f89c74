#!/usr/bin/env python3
"""Check the SASS of CUDA objects for memory instructions that read a uniform
register nothing has written.

ptxas 13.0 miscompiled an fp8 variant of the attention kernel (branch fp8v16,
bench/NOTES.md "FP8 KV cache on the GPU"): a cp.async with an L2 hint became
`LDGSTS.E.BYPASS.128 [R4+UR0], desc[UR1][R8.64]` with UR0 and UR1 never set,
which the H200 stops at with "an illegal instruction was encountered". No
GPU runs in CI, so this check reads the disassembly instead: in every
function, each uniform register that a memory operand reads (`desc[URn]`,
`[Rx+URn]`) must be written by an instruction at a lower address.

    tools/check_sass.py build/liblongflow-cuda.so [more objects...]

Needs cuobjdump and nvdisasm (the CUDA toolkit, or the PyPI wheels
nvidia-cuda-cuobjdump and nvidia-cuda-nvdisasm, which tools/requirements-test.txt
installs). Exit status: 0 clean, 1 findings, 2 no cuobjdump or it failed.
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig

INSTR = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
PRED = re.compile(r"^@!?U?P[T0-9]+\s+")
MEM_UR = re.compile(r"desc\[(UR\d+)\]|\[[^\]]*?\+(UR\d+)")


def functions(sass):
    """(name, [(address, instruction text)]) for each function of a
    cuobjdump -sass listing."""
    out = []
    for part in re.split(r"\n\s*Function : ", sass)[1:]:
        name, _, body = part.partition("\n")
        instrs = []
        for line in body.splitlines():
            m = INSTR.match(line)
            if m:
                instrs.append((int(m.group(1), 16), PRED.sub("", m.group(2))))
        out.append((name.strip(), instrs))
    return out


def written(instr):
    """The uniform registers an instruction writes (its destination; a pair
    for .64 and WIDE forms)."""
    op, _, args = instr.partition(" ")
    dst = args.split(",")[0].strip()
    m = re.fullmatch(r"UR(\d+)", dst)
    if not m:
        return set()
    n = int(m.group(1))
    return {n, n + 1} if (".64" in op or "WIDE" in op) else {n}


def unwritten_reads(instrs):
    """[(address, instruction, register)] for each memory operand that reads
    a uniform register no instruction at a lower address writes."""
    seen, bad = set(), []
    for addr, instr in sorted(instrs):
        for m in MEM_UR.finditer(instr):
            reg = m.group(1) or m.group(2)
            if int(reg[2:]) not in seen:
                bad.append((addr, instr, reg))
        seen |= written(instr)
    return bad


def find_cuobjdump():
    """cuobjdump from $CUOBJDUMP, PATH, the toolkit, or the PyPI wheel."""
    if os.environ.get("CUOBJDUMP"):
        return os.environ["CUOBJDUMP"]
    for cand in (shutil.which("cuobjdump"), "/usr/local/cuda/bin/cuobjdump"):
        if cand and os.access(cand, os.X_OK):
            return cand
    roots = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    roots |= {p for p in sys.path if p.endswith("-packages")}
    for root in sorted(roots):
        for cand in sorted(glob.glob(os.path.join(root, "nvidia", "cu*", "bin", "cuobjdump"))):
            if os.access(cand, os.X_OK):
                return cand
    return None


def check(path, cuobjdump):
    """(functions checked, memory instructions checked, findings) of one object."""
    r = subprocess.run([cuobjdump, "-sass", path], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{cuobjdump} -sass {path}: {r.stderr.strip() or 'failed'}")
    funcs = functions(r.stdout)
    n_mem, found = 0, []
    for name, instrs in funcs:
        n_mem += sum(1 for _, t in instrs if MEM_UR.search(t))
        found += [(name, *b) for b in unwritten_reads(instrs)]
    return len(funcs), n_mem, found


def main(argv):
    if len(argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    cuobjdump = find_cuobjdump()
    if not cuobjdump:
        print("check_sass: no cuobjdump (install the CUDA toolkit's, or pip install "
              "nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm)", file=sys.stderr)
        return 2
    status = 0
    for path in argv[1:]:
        try:
            n_fun, n_mem, found = check(path, cuobjdump)
        except (OSError, RuntimeError) as e:
            print(f"check_sass: {e}", file=sys.stderr)
            return 2
        print(f"{path}: {n_fun} functions, {n_mem} memory operands with uniform registers, "
              f"{len(found)} reading a register nothing wrote")
        for name, addr, instr, reg in found[:20]:
            print(f"  {name} @{addr:#x}: {instr}  ({reg} never written before)")
        status |= 1 if found else 0
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
