"""Text pictures of a compiled graph: an ASCII table for the terminal, Mermaid and DOT."""

from __future__ import annotations

from .compile import CompiledGraph, Step
from .spec import AdaptiveSamples, BaseNode


def _width(node: BaseNode) -> str:
    samples = getattr(node, "samples", None)
    if isinstance(samples, AdaptiveSamples):
        return f" ×{samples.min}..{samples.max} ({samples.stop})"
    if isinstance(samples, int) and samples > 1:
        k = getattr(node, "k", None)
        return f" ×{samples}" + (f" keep {k}" if k else "")
    agents = getattr(node, "agents", None)
    if agents:
        return f" {agents} agents × {getattr(node, 'rounds', 1)} rounds"
    rounds = getattr(node, "rounds", None)
    return f" × {rounds} rounds" if rounds else ""


def _label(g: CompiledGraph, name: str) -> str:
    node = g.spec.nodes[name]
    models = g.steps[name].models
    model = ("/".join(dict.fromkeys(models))) if models else "-"
    return f"{node.role} · {model}{_width(node)}"


def ascii_graph(g: CompiledGraph) -> str:
    spec = g.spec
    names = [s for s in g.order if s in spec.nodes]
    w = max(len(n) for n in names)
    lines = [f"{g.name}: {len(spec.nodes)} nodes, {len(g.steps)} steps, output '{g.output}'"]
    if spec.description:
        lines.append(f"  {spec.description.strip().splitlines()[0]}")
    labels = {n: _label(g, n) for n in names}
    lw = max(len(v) for v in labels.values())
    for name in names:
        node = spec.nodes[name]
        src = ", ".join(node.inputs) if node.inputs else "question"
        mark = "  ◀ output" if name == g.output else ""
        lines.append(f"  {name.ljust(w)}  {labels[name].ljust(lw)}  ← {src}{mark}")
        inner = [s for s in g.steps.values() if s.node == name and s.id != name]
        for st in inner:
            lines.append(f"  {'':{w}}    └ {st.id} ({st.phase}, round {st.round})")
    return "\n".join(lines)


def _mid(step_id: str) -> str:
    return "n_" + "".join(ch if ch.isalnum() else "_" for ch in step_id)


def _step_label(g: CompiledGraph, st: Step) -> str:
    if st.id == st.node:
        return f"{st.node}<br/>{_label(g, st.node)}"
    return f"{st.id}<br/>{st.phase}"


def mermaid(g: CompiledGraph) -> str:
    out = ["flowchart TD", '  q(["question"])']
    for sid in g.order:
        st = g.steps[sid]
        label = _step_label(g, st).replace('"', "'")
        shape = ('[["', '"]]') if not st.models else ('["', '"]')
        out.append(f"  {_mid(sid)}{shape[0]}{label}{shape[1]}")
    for sid in g.order:
        st = g.steps[sid]
        if not st.deps:
            out.append(f"  q --> {_mid(sid)}")
        for d in st.deps:
            out.append(f"  {_mid(d)} --> {_mid(sid)}")
    out.append(f'  {_mid(g.output)} --> a(["answer"])')
    return "\n".join(out)


def dot(g: CompiledGraph) -> str:
    out = [f'digraph "{g.name}" {{', "  rankdir=TB;", '  q [label="question", shape=oval];']
    for sid in g.order:
        st = g.steps[sid]
        label = _step_label(g, st).replace("<br/>", "\\n").replace('"', "'")
        shape = "box" if st.models else "diamond"
        out.append(f'  "{sid}" [label="{label}", shape={shape}];')
    for sid in g.order:
        st = g.steps[sid]
        if not st.deps:
            out.append(f'  q -> "{sid}";')
        for d in st.deps:
            out.append(f'  "{d}" -> "{sid}";')
    out.append('  a [label="answer", shape=oval];')
    out.append(f'  "{g.output}" -> a;')
    out.append("}")
    return "\n".join(out)
