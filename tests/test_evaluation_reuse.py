"""A saved evaluation reads back as it was written, and only under the stamp it was saved with."""
import math

import pandas as pd

from surgvqa import evaluate
from surgvqa.config import Config


def test_a_saved_evaluation_reads_back_as_written_and_only_under_its_stamp(tmp_path):
    cfg = Config(run_root=str(tmp_path))
    predictions = pd.DataFrame([
        # answers and ids that look like numbers stay strings; a missing engine / transcript stays missing
        {"system": "majority", "id": "qa_000001", "video_id": "001", "prediction": "2", "short_answer": "2",
         "correct": True, "engine": None, "transcript": float("nan"), "seen_wording": False},
        {"system": "asr_pipeline", "id": "qa_000002", "video_id": "001", "prediction": "no", "short_answer": "yes",
         "correct": False, "engine": "piper", "transcript": "is there dye", "seen_wording": True},
    ])
    transcripts = pd.DataFrame([{"set": "in_domain", "reference": "is there dye", "graft": "is there die"}])
    result = evaluate.EvaluationResult(predictions, {"majority": {"accuracy": {"val": 0.5}, "ci95": {"val": [0.1, 0.9]}}},
                                       {"graft": {"in_domain": {"wer": 0.25}}}, transcripts, {}, pd.DataFrame())
    result.save(cfg, "stamp-a")

    back = evaluate.EvaluationResult.load(cfg, "stamp-a")
    assert back.predictions["video_id"].tolist() == ["001", "001"]
    assert back.predictions["prediction"].tolist() == ["2", "no"]
    assert back.predictions["correct"].tolist() == [True, False]
    assert back.predictions["seen_wording"].tolist() == [False, True]
    assert pd.isna(back.predictions["engine"][0]) and back.predictions["engine"][1] == "piper"
    assert pd.isna(back.predictions["transcript"][0]) and back.predictions["transcript"][1] == "is there dye"
    assert back.systems == result.systems and back.asr == result.asr and back.long_answers == {}
    assert back.transcripts.to_dict("records") == transcripts.to_dict("records") and back.long_table.empty

    assert evaluate.EvaluationResult.load(cfg, "stamp-b") is None  # another stamp: evaluate again
    result.save(cfg)  # saved without a stamp (e.g. an edited result): nothing is reused from it
    assert evaluate.EvaluationResult.load(cfg, "stamp-a") is None
    assert not math.isnan(evaluate.load_predictions(cfg)["correct"].mean())


def test_the_library_code_hash_moves_with_any_module(tmp_path, monkeypatch):
    first = evaluate.library_code_hash()
    assert evaluate.library_code_hash() == first
    lib = tmp_path / "surgvqa"
    lib.mkdir()
    (lib / "evaluate.py").write_text("x = 1\n")
    (lib / "plots.py").write_text("y = 1\n")
    monkeypatch.setattr(evaluate, "__file__", str(lib / "evaluate.py"))
    one = evaluate.library_code_hash()
    (lib / "plots.py").write_text("y = 2\n")  # a module the evaluation does not import still counts
    assert evaluate.library_code_hash() != one
