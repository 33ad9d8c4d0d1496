"""Import Archon configs (``tts-graph import archon CONFIG.json > graph.yaml``).

An Archon config is a JSON object with a ``name`` and ``layers``: a list of layers, each a list
of components (or the older ``{"models": [...]}`` form). Every component of a layer gets all
the outputs of the layer before it; what a layer does not replace (candidates, critiques,
unit tests) passes on to the next; the last layer's output is the answer. The import keeps
that meaning:

===================  ===================================================================
Archon               tts-graph
===================  ===================================================================
generator            ``solver`` node (``samples``) that reads the query alone; a layer of
                     generators after others replaces their candidates, as in Archon
fuser                ``fuser`` node (``samples``) over every output of the layer before
critic               ``critic`` node (``limit`` = the candidates it sees); the candidates
                     pass on unchanged and its critiques feed the next layers' components
                     (until a fuser layer uses them), as Archon passes them on
ranker               ``ranker`` node (``top_k``); the critiques reach it with
                     ``use_critiques``
verifier             ``verifier`` node (``keep: passing``: all of them when none pass;
                     ``first_k``: the first k that pass)
unit_test_generator  ``unit_test_generator`` node (``cap`` from ``unit_test_cap``); its tests
                     reach the prompts of later solvers and fusers, as Archon appends them
                     to the query; candidates pass through its layer
unit_test_evaluator  ``unit_test_evaluator`` node (a model checks each candidate; ``top_k``,
                     ``first_k``/``first_pass``; all candidates, ranked, without ``top_k``)
model_type           a ``litellm`` model (``openai/``, ``together_ai/``, ``anthropic/``,
                     ``groq/``, ``gemini/``, ``bedrock/``) with the provider's ``api_key_env``;
                     ``vLLM`` becomes the in-process ``vllm`` backend
===================  ===================================================================

``temperature`` and ``max_tokens`` go onto each node. Fields that only change how Archon
batches, stores or sizes calls (``ranker_batch_size``, ``batch_num``, ``checkpoint``,
``max_context_length``, ...) are dropped, and so are fields no Archon component reads
(``top_k_generations``, a generator's ``top_k``): the produced YAML says so in a comment on
the node. So is the older form's ``branches`` (Archon's layer reads only its ``models``), and
so are components whose output nothing reads (a critic whose critiques are replaced unread, a
layer a later layer of generators replaces), with a comment in the file's head.
``length_control`` (a fuser's "no longer than the longest candidate") becomes that
sentence in the fuser's prompt; ``no_system`` on a generator drops the system prompt. Where
Archon would pick one of several final candidates at random, the graph answers with its output
node's first candidate (a ranker's: the top-ranked one).

Parts with no equivalent — custom components, the PairRM ranker, a model type without a fixed
endpoint (``tgi``), a last layer with several components, a fuser with no candidates to
fuse (Archon's own run fails there), a layer written as one component rather than a list
(Archon's own load fails there) — are errors, one line each: ``FILE:LINE: path: message``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from .errors import GraphError, GraphErrors
from .yamlpos import Loc, line_of, load_yaml, read_source

#: Archon's model_type (lower case, without ``_API``) -> (litellm provider prefix, key variable)
PROVIDERS: dict[str, tuple[str, str | None]] = {
    "openai": ("openai", "OPENAI_API_KEY"),
    "together": ("together_ai", "TOGETHER_API_KEY"),
    "anthropic": ("anthropic", "ANTHROPIC_API_KEY"),
    "groq": ("groq", "GROQ_API_KEY"),
    "google": ("gemini", "GOOGLE_API_KEY"),
    "gemini": ("gemini", "GOOGLE_API_KEY"),
    # AWS credentials (AWS_ACCESS_KEY_ID, ...) are read from the environment by litellm
    "bedrock": ("bedrock", None),
}
SUPPORTED = ("generator", "fuser", "critic", "ranker", "verifier", "unit_test_generator",
             "unit_test_evaluator")
#: components that Archon runs alone in their layer, over the whole previous layer
ALONE = ("critic", "ranker", "verifier", "unit_test_evaluator")
#: components that read the previous layer's candidates
NEEDS_CANDIDATES = ("fuser", "critic", "ranker", "verifier", "unit_test_evaluator")
ROLE = {"generator": "solver", "fuser": "fuser", "critic": "critic", "ranker": "ranker",
        "verifier": "verifier", "unit_test_generator": "unit_test_generator",
        "unit_test_evaluator": "unit_test_evaluator"}
#: fields read per component
FIELDS = {"type", "model", "model_type", "temperature", "max_tokens", "samples", "top_k",
          "use_critiques", "no_system", "length_control", "length_contorl", "unit_test_cap",
          "first_k", "first_pass", "remove_unit_tests_from_prompt"}
#: fields that only change how Archon batches, stores or sizes calls: dropped, and why
DROPPED = {
    "ranker_batch_size": "the batch size of Archon's PairRM ranker; an LLM ranker ranks "
                         "every candidate in one call",
    "batch_num": "how many candidates Archon checks per call; each is checked in its own "
                 "call here",
    "checkpoint": "where Archon stores or loads its outputs; the response cache "
                  "(--cache) does that here",
    "max_context_length": "a context cap; max_tokens caps each completion here",
    "top_k_generations": "read by no Archon component",
    # an older fuser's PairRM pre-ranking settings; Archon's fuser no longer reads them
    "ranker_config": "read by no Archon component (an older fuser's PairRM settings)",
    "fuse_generations_count": "read by no Archon component",
}
#: the sentence Archon's fuser adds to its prompt under ``length_control``
LENGTH_CONTROL = ("The fused response can only be as long as the longest response in the "
                  "current candidate pool.")
_NAME_BAD = re.compile(r"[^A-Za-z0-9_\-]")


def _safe_name(text: str, fallback: str) -> str:
    name = _NAME_BAD.sub("_", text.strip()).strip("_-") or fallback
    return name if re.match(r"[A-Za-z_]", name) else f"m_{name}"


class _Importer:
    def __init__(self, source: str, lines: dict[Loc, int]) -> None:
        self.source = source
        self.lines = lines
        self.errors: list[GraphError] = []
        self.models: dict[str, dict[str, Any]] = {}
        self._model_names: dict[tuple[str, ...], str] = {}

    def error(self, loc: Loc, message: str) -> None:
        self.errors.append(GraphError(message, path=".".join(str(p) for p in loc),
                                      source=self.source, line=line_of(self.lines, loc)))

    # --------------------------------------------------------------------------- models

    def model(self, comp: dict[str, Any], loc: Loc) -> str | None:
        model = comp.get("model")
        mtype = comp.get("model_type")
        if model == "llm-blender/PairRM":  # its configs leave model_type empty
            self.error((*loc, "model"), "the PairRM reward-model ranker has no tts-graph "
                       "equivalent (rank with an LLM instead)")
            return None
        ok = True
        if not isinstance(model, str) or not model.strip():
            self.error((*loc, "model"), "required: the model's name (a string)")
            ok = False
        if not isinstance(mtype, str) or not mtype.strip():
            self.error((*loc, "model_type"), "required: the model type (a string such as "
                       "OpenAI_API, Together_API or Anthropic_API)")
            ok = False
        if not ok:
            return None
        assert isinstance(model, str) and isinstance(mtype, str)
        kind = mtype.strip().lower().removesuffix("_api")
        entry: dict[str, Any]
        if kind == "vllm":
            entry = {"backend": "vllm", "model": model}
        elif kind in PROVIDERS:
            prefix, key_env = PROVIDERS[kind]
            # some configs already name the provider (bedrock/meta.llama3-...)
            full = model if model.startswith(f"{prefix}/") else f"{prefix}/{model}"
            entry = {"backend": "litellm", "model": full}
            if key_env:
                entry["api_key_env"] = key_env
        elif kind == "tgi":
            self.error((*loc, "model_type"), "'tgi' has no tts-graph equivalent here: the "
                       "config does not say where the server is (use backend: litellm with "
                       "an api_base)")
            return None
        else:
            known = ", ".join(["OpenAI_API", "Together_API", "Anthropic_API", "Groq_API",
                               "Google_API", "Bedrock_API", "vLLM"])
            self.error((*loc, "model_type"), f"unknown model type '{mtype}' (custom "
                       f"generators have no tts-graph equivalent; known: {known})")
            return None
        key = tuple(str(v) for v in entry.values())
        if key in self._model_names:
            return self._model_names[key]
        base = _safe_name(model.rsplit("/", 1)[-1], "model")
        name, n = base, 1
        while name in self.models:
            n += 1
            name = f"{base}-{n}"
        self.models[name] = entry
        self._model_names[key] = name
        return name

    # ----------------------------------------------------------------------- components

    def sampling(self, comp: dict[str, Any], loc: Loc, node: dict[str, Any]) -> None:
        t = comp.get("temperature")
        if t is not None:
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t <= 2:
                self.error((*loc, "temperature"), "must be a number from 0 to 2")
            else:
                node["temperature"] = t
        mt = comp.get("max_tokens")
        if mt is not None:
            if isinstance(mt, bool) or not isinstance(mt, int) or mt < 1:
                self.error((*loc, "max_tokens"), "must be an integer >= 1")
            else:
                node["max_tokens"] = mt

    def count(self, comp: dict[str, Any], loc: Loc, field: str, default: int | None
              ) -> int | None:
        v = comp.get(field, default)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            self.error((*loc, field), "must be an integer >= 1")
            return None
        return v


def _layer_components(imp: _Importer, layer: Any, loc: Loc, head_notes: list[str]
                      ) -> tuple[list[Any], Loc] | None:
    """The components of a layer: a list, or Archon's older ``{"models": [...]}`` form."""
    if isinstance(layer, dict):
        if "models" not in layer and "type" in layer:
            # One line rather than one per field: Archon's Layer reads a dict layer's
            # "models" only, so its own load fails here too (KeyError 'models').
            imp.error(loc, "a layer must be a list of components: this one is a single "
                           "component (write the layer as [ {...} ]; Archon cannot load this "
                           "form either)")
            return None
        for key in layer:
            if key not in ("models", "branches"):
                imp.error((*loc, key), f"field '{key}' has no tts-graph equivalent")
        branches = layer.get("branches", 1)
        if branches != 1:  # Archon reads only "models" from this form (its Layer class)
            head_notes.append(f"layer {loc[-1] + 1}: branches {json.dumps(branches)} dropped: "
                              "Archon reads only the models of an older-form layer")
        models = layer.get("models")
        if not isinstance(models, list):
            imp.error((*loc, "models"), "required: a list of components")
            return None
        return models, (*loc, "models")
    if not isinstance(layer, list):
        imp.error(loc, "a layer must be a list of components")
        return None
    return layer, loc


def _fuser_prompt_with_length_control() -> str:
    from .roles.fuser import Fuser

    return Fuser.user_prompt["main"].replace("Your solution:",
                                             LENGTH_CONTROL + "\n\nYour solution:")


def _fields(imp: _Importer, comp: dict[str, Any], ctype: str, loc: Loc,
            node: dict[str, Any], notes: list[str]) -> None:
    """The component's fields beyond type/model/sampling: mapped onto ``node``, or dropped
    with a note saying why, or an error when they change what flows."""
    for key in comp:
        if key in DROPPED:
            notes.append(f"{key} {json.dumps(comp[key])} dropped: {DROPPED[key]}")
        elif key not in FIELDS:
            imp.error((*loc, key), f"field '{key}' has no tts-graph equivalent")
    if "top_k" in comp and ctype not in ("ranker", "unit_test_evaluator"):
        notes.append(f"top_k {json.dumps(comp['top_k'])} dropped: Archon's {ctype} does not "
                     "read it")
    if comp.get("no_system"):
        if ctype == "generator":  # Archon then sends the conversation alone
            node["prompts"] = {"system": ""}
            notes.append("no_system: the system prompt is left out")
        else:
            notes.append(f"no_system dropped: a {ROLE[ctype]} node writes its own prompts")
    for key in ("length_control", "length_contorl"):  # Archon's configs spell it both ways
        if not comp.get(key):
            continue
        if ctype == "fuser":
            node["prompts"] = {"user": _fuser_prompt_with_length_control()}
            notes.append(f"{key}: the prompt asks for no more than the longest candidate")
        else:
            notes.append(f"{key} dropped: only Archon's fuser reads it")
    if ctype == "unit_test_generator":
        cap = imp.count(comp, loc, "unit_test_cap", None)
        if cap is not None:
            node["cap"] = cap
    elif "unit_test_cap" in comp:
        notes.append("unit_test_cap dropped: the unit_test_generator caps the tests")
    if ctype == "unit_test_evaluator":
        top_k = imp.count(comp, loc, "top_k", None)
        first_k = imp.count(comp, loc, "first_k", None)
        if first_k is None and comp.get("first_pass"):
            first_k = 1  # Archon's older spelling of first_k: 1
        if top_k is not None:
            node["top_k"] = top_k
        else:
            node["keep"] = "all"  # Archon passes every candidate on, ranked
        if first_k is not None:
            node["first_k"] = first_k
        if "remove_unit_tests_from_prompt" in comp:
            notes.append("remove_unit_tests_from_prompt dropped: the evaluator lists the "
                         "tests apart from the question either way")
    elif ctype == "verifier":
        first_k = imp.count(comp, loc, "first_k", None)
        if first_k is not None:
            node["first_k"] = first_k
        if "first_pass" in comp:  # only the evaluator reads this older spelling
            notes.append("first_pass dropped: Archon's verifier does not read it")
    else:
        for key in ("first_k", "first_pass"):
            if key in comp:
                notes.append(f"{key} dropped: Archon's {ctype} does not read it")
        if "remove_unit_tests_from_prompt" in comp:
            notes.append("remove_unit_tests_from_prompt dropped: only the evaluator reads it")


def _leave_out_unread(nodes: dict[str, dict[str, Any]], output: str,
                     notes: dict[str, list[str]]) -> None:
    """Leave out the components whose output no later component reads: a critic whose
    critiques are replaced before anything reads them, a layer whose candidates a later
    layer of generators replaces (a generator ignores earlier outputs). Archon computes them
    and drops them; here they would cost calls for nothing. Until none is left: leaving one
    out can leave its own inputs unread."""
    while True:
        read = {i for node in nodes.values() for i in node.get("inputs", [])}
        unread = [k for k in nodes if k != output and k not in read]
        if not unread:
            return
        is_critic = {k: nodes[k]["role"] == "critic" for k in unread}
        for critics in (True, False):  # one line for the critics, one for the rest
            names = [k for k in unread if is_critic[k] == critics]
            if not names:
                continue
            why = ("critiques (in Archon they are computed and then replaced)" if critics
                   else "output (in Archon it is computed and then replaced)")
            notes.setdefault("", []).append(
                f"{', '.join(names)} left out: no later component reads "
                f"{'their' if len(names) > 1 else 'its'} {why}")
            for name in names:
                del nodes[name]
                notes.pop(name, None)


def archon_to_dict(data: Any, *, source: str = "<archon>",
                   lines: dict[Loc, int] | None = None, name: str | None = None,
                   notes: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Turn a loaded Archon config into graph data (the shape of a graph file). Raises
    ``GraphErrors`` naming every part that has no equivalent. ``notes`` (when given) gets,
    per node name, what was dropped or rewritten (``to_yaml`` writes them as comments)."""
    imp = _Importer(source, lines or {})
    notes = notes if notes is not None else {}
    if not isinstance(data, dict):
        raise GraphError("an Archon config must be a JSON object with 'name' and 'layers'",
                         source=source, line=1)
    for key in data:
        if key == "custom":
            if data[key]:
                imp.error(("custom",), "custom components have no tts-graph equivalent")
        elif key not in ("name", "layers"):
            imp.error((key,), f"field '{key}' has no tts-graph equivalent")
    layers = data.get("layers")
    if not isinstance(layers, list) or not layers:
        imp.error(("layers",), "required: a non-empty list of layers")
        raise GraphErrors(imp.errors)
    graph_name = _safe_name(name or str(data.get("name") or "archon"), "archon")

    nodes: dict[str, dict[str, Any]] = {}
    prev: list[str] = []  # nodes whose answers the next layer gets
    prev_count = 0  # how many candidates they hold (at most)
    critique: str | None = None  # the critic whose critiques the next layers get
    tests: str | None = None  # the unit-test generator whose tests later layers get
    summary: list[str] = []
    last: tuple[Loc, list[str], str | None] | None = None
    head_notes: list[str] = []  # notes on the whole graph (a comment in the file's head)
    for li, layer in enumerate(layers):
        got = _layer_components(imp, layer, ("layers", li), head_notes)
        if got is None:
            continue
        comps, lloc = got
        if not comps:
            imp.error(lloc, "empty layer")
            continue
        types = [c.get("type") if isinstance(c, dict) else None for c in comps]
        layer_nodes: list[str] = []
        layer_count = 0
        new_critique: str | None = None
        new_tests: str | None = None
        words: list[str] = []
        for ci, comp in enumerate(comps):
            loc = (*lloc, ci)
            if not isinstance(comp, dict):
                imp.error(loc, "a component must be an object with 'type', 'model' and "
                          "'model_type'")
                continue
            ctype = comp.get("type")
            if not isinstance(ctype, str):
                imp.error((*loc, "type"), f"required: one of {', '.join(SUPPORTED)}")
                continue
            if ctype not in SUPPORTED:
                imp.error((*loc, "type"), f"unknown component type '{ctype}' (custom "
                          "components have no tts-graph equivalent; known: "
                          f"{', '.join(SUPPORTED)})")
                continue
            if ctype in ALONE and len(comps) > 1:
                imp.error((*loc, "type"), f"a {ctype} must be alone in its layer (Archon "
                          f"runs it over the whole previous layer); this layer has "
                          f"{len(comps)} components")
                continue
            if ctype in NEEDS_CANDIDATES and not prev:
                imp.error((*loc, "type"), f"a {ctype} needs candidates from an earlier "
                          "layer: the first layer must hold generators")
                continue
            if ctype == "unit_test_evaluator" and tests is None:
                imp.error((*loc, "type"), "a unit_test_evaluator needs the tests of a "
                          "unit_test_generator in an earlier layer")
                continue
            node_name = f"l{li + 1}_{ctype}" + (f"{ci + 1}" if len(comps) > 1 else "")
            node_notes: list[str] = []
            model = imp.model(comp, loc)
            node: dict[str, Any] = {"role": ROLE[ctype]}
            if model is not None:
                node["model"] = model
            if ctype == "generator":
                samples = imp.count(comp, loc, "samples", 1) or 1
                if samples > 1:
                    node["samples"] = samples
                layer_count += samples
                words.append(f"{comp.get('model')} x{samples}")
            elif ctype == "fuser":
                samples = imp.count(comp, loc, "samples", 1) or 1
                if samples > 1:
                    node["samples"] = samples
                layer_count += samples
                words.append(f"fuse with {comp.get('model')}"
                             + (f" x{samples}" if samples > 1 else ""))
            elif ctype == "critic":
                node["limit"] = max(1, prev_count)
                layer_count = prev_count
                words.append(f"critique with {comp.get('model')}")
            elif ctype == "ranker":
                if "top_k" not in comp:
                    imp.error((*loc, "top_k"), "required: how many candidates the ranker "
                              "keeps")
                top_k = imp.count(comp, loc, "top_k", None) or 1
                node["top_k"] = top_k
                layer_count = min(top_k, prev_count)
                words.append(f"rank with {comp.get('model')}, keep {top_k}")
            elif ctype == "verifier":
                node["keep"] = "passing"
                layer_count = prev_count
                words.append(f"verify with {comp.get('model')}")
            elif ctype == "unit_test_generator":
                words.append(f"write unit tests with {comp.get('model')}")
            elif ctype == "unit_test_evaluator":
                layer_count = prev_count
                words.append(f"check the unit tests with {comp.get('model')}")
            _fields(imp, comp, ctype, loc, node, node_notes)
            imp.sampling(comp, loc, node)
            # generators and unit-test generators read the query alone (in a later layer
            # too: Archon's generator ignores the earlier outputs, and replaces them)
            inputs = list(prev) if ctype not in ("generator", "unit_test_generator") else []
            # Archon's ranker reads the critiques only with use_critiques
            reads_critiques = ctype not in ("generator", "critic", "unit_test_generator",
                                            "unit_test_evaluator") and (
                ctype != "ranker" or bool(comp.get("use_critiques")))
            if critique is not None and reads_critiques:
                inputs.append(critique)
            # the tests are part of the query every later component sees (Archon appends
            # them to it); our solver and fuser prompts show them, the evaluator checks them
            seen_tests = new_tests or tests
            if seen_tests is not None and ctype in ("generator", "fuser",
                                                    "unit_test_evaluator"):
                inputs.append(seen_tests)
            if inputs:
                node["inputs"] = inputs
            nodes[node_name] = node
            if node_notes:
                notes[node_name] = node_notes
            if ctype == "critic":
                new_critique = node_name
            elif ctype == "unit_test_generator":
                new_tests = node_name
            else:
                layer_nodes.append(node_name)
        if new_tests is not None:
            tests = new_tests
        if new_critique is not None:  # the candidates pass through a critic layer
            critique = new_critique
        elif layer_nodes:
            if any(t == "fuser" for t in types) or not prev:
                critique = None  # a fuser layer used them; Archon passes none further
            prev = layer_nodes
            prev_count = layer_count
        # else: a layer of unit-test generators only: the candidates pass through it
        summary.append(f"layer {li + 1}: " + "; ".join(words))
        kind = types[-1] if len(types) == 1 else None
        last = (lloc, layer_nodes if new_critique is None else [], kind)
    if last is not None and not imp.errors:
        lloc, out_nodes, ltype = last
        if ltype in ("critic", "unit_test_generator"):
            what = "critiques" if ltype == "critic" else "tests"
            imp.error(lloc, f"the last layer is a {ltype}: its {what} would feed nothing "
                      "(end with a fuser, a ranker or a verifier)")
        elif len(out_nodes) != 1:
            imp.error(lloc, f"the last layer has {len(out_nodes)} components and Archon "
                      "would pick one of their outputs at random: no equivalent (end with "
                      "one component, such as a fuser or a ranker)")
    if imp.errors:
        raise GraphErrors(imp.errors)
    assert last is not None
    if head_notes:
        notes.setdefault("", []).extend(head_notes)
    _leave_out_unread(nodes, last[1][0], notes)
    used = {node.get("model") for node in nodes.values()}
    models = {k: m for k, m in imp.models.items() if k in used}
    return {
        "version": 1,
        "name": graph_name,
        "description": (f"Imported from the Archon config {Path(source).name}: "
                        + "; then ".join(summary)),
        "models": models,
        "nodes": nodes,
        "output": last[1][0],
    }


def load_archon(path: str | Path, *, name: str | None = None,
                notes: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Read an Archon config file and return graph data. Malformed JSON is a ``GraphError``
    ``FILE:LINE: invalid JSON: ...``."""
    text = read_source(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GraphError(f"invalid JSON: {exc.msg} (column {exc.colno})", source=str(path),
                         line=exc.lineno) from None
    except RecursionError:
        raise GraphError("invalid JSON: nested too deeply", source=str(path)) from None
    try:  # JSON is YAML: the YAML loader knows the line of every value
        _, lines = load_yaml(text, str(path))
    except GraphError:
        lines = {}
    return archon_to_dict(data, source=str(path), lines=lines, name=name, notes=notes)


def to_yaml(graph: dict[str, Any], source: str | None = None,
            notes: dict[str, list[str]] | None = None) -> str:
    """The graph data as a graph file, checked: it validates and compiles. ``notes`` (from
    ``archon_to_dict``) become a comment after each node's line."""
    from .backends.registry import backend_names
    from .compile import compile_graph
    from .spec import parse_graph

    compile_graph(parse_graph(graph, source="<imported graph>"), backends=backend_names())
    head = "# Imported by `tts-graph import archon" + (f" {source}" if source else "") + "`.\n"
    keys = sorted({m["api_key_env"] for m in graph["models"].values() if "api_key_env" in m})
    if keys:
        head += f"# API keys are read from the environment: {', '.join(keys)}.\n"
    for note in (notes or {}).get("", []):
        head += f"# {note}.\n"

    def flow(value: Any) -> str:
        return yaml.safe_dump(value, default_flow_style=True, width=1 << 16, sort_keys=False,
                              allow_unicode=True).strip()

    order = ("role", "model", "inputs")
    body = [yaml.safe_dump({k: graph[k] for k in ("version", "name", "description")},
                           sort_keys=False, allow_unicode=True, width=100).rstrip(), "models:"]
    body += [f"  {name}: {flow(m)}" for name, m in graph["models"].items()]
    body.append("nodes:")
    for name, node in graph["nodes"].items():
        ordered = {k: node[k] for k in order if k in node}
        ordered.update({k: v for k, v in node.items() if k not in order})
        body.append(f"  {name}: {flow(ordered)}")
        for note in (notes or {}).get(name, []):
            body.append(f"  # {name}: {note}")
    body.append(f"output: {graph['output']}")
    return head + "\n".join(body) + "\n"
