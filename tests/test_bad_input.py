"""Bad input gets a clear error naming what is wrong."""

from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrovae import PairError, SVIRun
from pyrovae.infer import checkpoint
from pyrovae.infer.runfolder import RunFolder, RunFolderError
from pyrovae.app.build import build_pair
from pyrovae.data import Split, load_dataset
from pyrovae.app.config import make_config
from pyrovae.app.runs import load_run, train

from conftest import small_pair


def test_data_shape_that_does_not_fit_the_networks():
    model, guide = small_pair(image_shape=(1, 28, 28))
    x = torch.zeros(8, 1, 64, 64)
    with pytest.raises(PairError, match=r"data of shape \[8, 1, 64, 64\] does not fit the pair"):
        SVIRun(model, guide, x, progress=False)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_in_data(bad):
    x = torch.zeros(4, 1, 8, 8)
    x[1, 0, 2, 2] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        Split(x)


def test_values_outside_unit_interval_cannot_be_binarized():
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\] to be binarized"):
        Split(torch.full((2, 1, 4, 4), 3.0), binarize="dynamic")


def test_non_binary_data_with_bernoulli_likelihood():
    model, guide = small_pair(image_shape=(1, 8, 8))
    x = torch.full((4, 1, 8, 8), 0.5)
    with pytest.raises(PairError, match="Bernoulli likelihood.*binary"):
        SVIRun(model, guide, x, progress=False)


def test_model_and_guide_latent_names_differ():
    model, _ = small_pair(image_shape=(1, 8, 8))

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("w", dist.Normal(torch.zeros(x.shape[0], 4), 1.0).to_event(1))

    with pytest.raises(PairError, match=r"model only \['z'\], guide only \['w'\]"):
        SVIRun(model, guide, torch.zeros(4, 1, 8, 8), progress=False)


def test_unknown_model_and_dataset_names():
    with pytest.raises(ValueError, match="unknown model 'vea'"):
        build_pair(make_config(model="vea", image_shape=[1, 8, 8]))
    with pytest.raises(ValueError, match="unknown dataset 'mnsit'"):
        load_dataset("mnsit")


def test_missing_dataset_folder_says_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("mnist", data_dir=str(tmp_path / "nowhere"))
    message = str(err.value)
    assert str(tmp_path / "nowhere") in message and "MNIST/raw" in message
    assert "train-images-idx3-ubyte.gz" in message  # how to get the files


def _tiny_run(tmp_path, **overrides):
    cfg = make_config(num_train=64, val_size=32, num_test=32, epochs=1, hidden=[16], latent_dim=2,
                      out=str(tmp_path / "run"), step_mode="eager", **overrides)
    train(cfg, progress=False)
    return cfg


def test_resume_from_corrupted_checkpoint(tmp_path):
    cfg = _tiny_run(tmp_path)
    path = Path(RunFolder(tmp_path / "run").checkpoint("last"))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(checkpoint.CheckpointError, match="unreadable"):
        train({**cfg, "epochs": 2}, resume=True, progress=False)


def test_checkpoint_of_a_different_architecture(tmp_path):
    _tiny_run(tmp_path)
    model, guide = small_pair(image_shape=(1, 64, 64), latent_dim=3, hidden=(16,))
    state = checkpoint.load(RunFolder(tmp_path / "run").checkpoint("best"))
    with pytest.raises(checkpoint.CheckpointError, match="different model architecture"):
        checkpoint.load_pair_state(model, guide, state["pair"])


def test_not_a_run_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a pyrovae run folder"):
        load_run(str(tmp_path))


def test_training_into_an_existing_run_needs_resume(tmp_path):
    cfg = _tiny_run(tmp_path)
    with pytest.raises(RunFolderError, match="--resume"):
        train(cfg, progress=False)
