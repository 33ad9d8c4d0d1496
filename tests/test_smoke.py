from tts_graph import Executor, loads_graph
from tts_graph.backends.scripted import ScriptedBackend


def test_self_consistency_on_scripted_backend() -> None:
    doc = loads_graph(
        """
version: 1
name: sc
models: {m: {backend: scripted, model: x}}
nodes:
  solve: {role: solver, model: m, samples: 5}
  vote: {role: vote, inputs: [solve]}
output: vote
"""
    )
    answers = ["Answer: 4", "Answer: 5", "Answer: 4", "Answer: 4", "Answer: 3"]
    backend = ScriptedBackend(lambda req, i: answers[req.sample_offset + i])
    result = Executor(doc, backends={"m": backend}).run("2+2?")
    assert result.status == "ok"
    assert result.answer == "4"
    assert result.usage.samples == 5
