"""Training checkpoints that are empty, truncated, of another type or damaged: refused with the file's name."""

import pytest
import torch
from cones2.training.errors import TrainingResumeError
from cones2.training.residual_file import make_residual, save_residual
from cones2.training.train_checkpoint import SUFFIX, TrainState, load_state, peek_state, save_state
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file


def valid_checkpoint(path):
    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([w], lr=1e-3)
    w.sum().backward()
    opt.step()
    return save_state(TrainState(step=1, settings={"phrase": "dog"}, fingerprints={"images": "x"},
                                 params={"w": w.detach()}, optimizer=opt.state_dict(),
                                 losses={"loss": [0.5]}), path)


def test_a_valid_checkpoint_round_trips(tmp_path):
    state = load_state(valid_checkpoint(tmp_path / f"ok{SUFFIX}"))
    assert state.step == 1 and state.settings == {"phrase": "dog"} and state.params["w"].shape == (3,)
    assert set(state.optimizer["state"][0]) >= {"exp_avg", "exp_avg_sq"}
    assert peek_state(tmp_path / f"ok{SUFFIX}").losses == {"loss": [0.5]}


@pytest.mark.parametrize("read", [peek_state, load_state])
def test_an_empty_checkpoint_is_named(tmp_path, read):
    (tmp_path / f"empty{SUFFIX}").write_bytes(b"")
    with pytest.raises(TrainingResumeError, match=rf"^empty{SUFFIX} is empty \(0 bytes\), not a checkpoint"):
        read(tmp_path / f"empty{SUFFIX}")


@given(cut=st.floats(0.0, 0.999))
@settings(max_examples=15, deadline=None)
def test_a_truncated_checkpoint_is_named(tmp_path_factory, cut):
    folder = tmp_path_factory.mktemp("cut")
    data = valid_checkpoint(folder / f"full{SUFFIX}").read_bytes()
    path = folder / f"cut{SUFFIX}"
    path.write_bytes(data[: max(1, int(len(data) * cut))])
    for read in (peek_state, load_state):
        with pytest.raises(TrainingResumeError, match=rf"^cut{SUFFIX}: not a readable checkpoint .*truncated"):
            read(path)


def test_files_of_another_type_are_named(tmp_path):
    save_residual(make_residual(torch.zeros(1, 1024)), tmp_path / "dog.safetensors")
    (tmp_path / f"residual{SUFFIX}").write_bytes((tmp_path / "dog.safetensors").read_bytes())
    torch.save(torch.zeros(3), tmp_path / f"torch{SUFFIX}")
    (tmp_path / f"text{SUFFIX}").write_text("root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(TrainingResumeError, match=f"^residual{SUFFIX} is not a Cones 2 training checkpoint"):
        load_state(tmp_path / f"residual{SUFFIX}")
    for name in (f"torch{SUFFIX}", f"text{SUFFIX}"):
        with pytest.raises(TrainingResumeError, match=f"^{name}: not a readable checkpoint"):
            peek_state(tmp_path / name)


@pytest.mark.parametrize("meta", [
    {"format": "cones2-training-state", "format_version": "1"},
    {"format": "cones2-training-state", "format_version": "1", "step": "x", "settings": "{}", "fingerprints": "{}",
     "losses": "{}"},
    {"format": "cones2-training-state", "format_version": "1", "step": "1", "settings": "{not json",
     "fingerprints": "{}", "losses": "{}"},
    {"format": "cones2-training-state", "format_version": "one"},
])
def test_damaged_metadata_is_named(tmp_path, meta):
    save_file({"param.w": torch.zeros(3)}, str(tmp_path / f"bad{SUFFIX}"), metadata=meta)
    for read in (peek_state, load_state):
        with pytest.raises(TrainingResumeError, match=rf"^bad{SUFFIX}: damaged checkpoint"):
            read(tmp_path / f"bad{SUFFIX}")
