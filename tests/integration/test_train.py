#!/usr/bin/python3
"""kiln train end to end: the seed model's accuracy on Fashion-MNIST, TensorBoard events read by an
independent reader, checkpoints that survive SIGKILL and corruption with bitwise-exact resume, MPI
data-parallel training against one process, and run-file errors.

    test_train.py KILN
"""
import concurrent.futures
import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tfevents  # noqa: E402

KILN = None
FMNIST = "/usr/share/datasets/fashion-mnist"
SCALE = {"map": {"transforms": [{"scale": {"feature": "image", "factor": 1 / 255}}]}}
MPI_ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_btl_vader_single_copy_mechanism="none", OMPI_MCA_rmaps_base_oversubscribe="1")


def kiln(*args, cwd=None, timeout=600, env=None):
    return subprocess.run([KILN] + [str(a) for a in args], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env=env)


def small_run(records=2048, epochs=2, layers=None, **extra):
    """A run on the first `records` training images: fast enough to train many times."""
    run = {
        "model": {"layers": layers or ["flatten", {"dense": {"units": 64, "activation": "relu"}}, {"dropout": {"rate": 0.2}},
                                       {"dense": {"units": 10}}]},
        "optimizer": {"adam": {"learning_rate": 0.001}},
        "loss": {"sparse_categorical_crossentropy": {"from_logits": True}},
        "metrics": ["accuracy"], "epochs": epochs, "batch_size": 32, "seed": 7,
        "data": {"source": {"format": "idx", "path": FMNIST + "/train-images-idx3-ubyte.gz"},
                 "stages": [{"take": records}, SCALE, {"cache": {}}, {"shuffle": {"buffer_size": records}}]},
        "validation_data": {"source": {"format": "idx", "path": FMNIST + "/t10k-images-idx3-ubyte.gz"},
                            "stages": [{"take": 1000}, SCALE]},
    }
    run.update(extra)
    return run


def newest_checkpoint(d):
    files = sorted(glob.glob(os.path.join(d, "ckpt-*.kiln")))
    return files[-1] if files else None


class Train(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="kiln_train_")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def workdir(self, name):
        d = os.path.join(self.dir, name)
        os.makedirs(d, exist_ok=True)
        return d

    def write_run(self, d, run, name="run.json"):
        path = os.path.join(d, name)
        with open(path, "w") as f:
            json.dump(run, f)
        return path

    def test_seed_model_reaches_088_after_10_epochs(self):
        """The built-in run (Keras' Fashion-MNIST classifier: batch 32, Adam 1e-3, 10 epochs). Its test accuracy
        after the 10th epoch varies with the seed by about half a point either way, as Keras' does (its tutorial
        reports 0.884 for one run): seeds 1 to 5 are trained and their mean must reach 0.88. bf16 and fp16 runs
        (seed 1) must land within half a point of that fp32 mean."""
        runs = [("fp32", seed) for seed in range(1, 6)] + [("bf16", 1), ("fp16", 1)]

        def train(run):
            precision, seed = run
            d = self.workdir("seed%d_%s" % (seed, precision))
            r = kiln("train", "--seed", seed, "--threads", "1", "--precision", precision, "--metrics-out", "metrics.json",
                     "--log-every", "500", cwd=d)
            self.assertEqual(r.returncode, 0, r.stderr[-2000:])
            return d, r.stderr, json.load(open(os.path.join(d, "metrics.json")))

        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:  # one run per core
            results = dict(zip(runs, pool.map(train, runs)))
        for run, (_, _, m) in results.items():
            print("%s seed %d: %s" % (run[0], run[1], m), file=sys.stderr)
            self.assertEqual((m["epochs"], m["steps"]), (10, 10 * 1875))
            self.assertLess(m["train_loss"], 0.3)
            self.assertGreater(m["test_accuracy"], 0.87)
        fp32 = np.mean([m["test_accuracy"] for run, (_, _, m) in results.items() if run[0] == "fp32"])
        print("test accuracy after 10 epochs: fp32 mean %.4f over seeds 1-5, bf16 %.4f, fp16 %.4f" %
              (fp32, results[("bf16", 1)][2]["test_accuracy"], results[("fp16", 1)][2]["test_accuracy"]), file=sys.stderr)
        self.assertGreaterEqual(fp32, 0.88)
        for precision in ["bf16", "fp16"]:
            self.assertLessEqual(abs(results[(precision, 1)][2]["test_accuracy"] - fp32), 0.005, precision)

        d, stderr, m = results[("fp32", 1)]
        # non-terminal stderr: one JSON log line per 500 steps and one per epoch
        logs = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
        steps = [l for l in logs if l["msg"] == "train step"]
        epochs = [l for l in logs if l["msg"] == "epoch end"]
        self.assertEqual(len(steps), 10 * 1875 // 500)
        self.assertEqual(len(epochs), 10)
        self.assertAlmostEqual(float(epochs[-1]["val_accuracy"]), m["test_accuracy"], places=5)
        # TensorBoard, read without kiln's code: per-step and per-epoch scalars
        files = glob.glob(os.path.join(d, "runs", "events.out.tfevents.*"))
        self.assertEqual(len(files), 1)
        events = tfevents.read_events(files[0])
        val = [(step, v["val_accuracy"]) for step, _, v in events if "val_accuracy" in v]
        self.assertEqual([s for s, _ in val], [1875 * (e + 1) for e in range(10)])
        self.assertAlmostEqual(val[-1][1], m["test_accuracy"], places=5)
        losses = [v["loss"] for _, _, v in events if "loss" in v]
        self.assertLess(losses[-1], losses[0])
        for _, _, v in events:
            if "learning_rate" in v:
                self.assertAlmostEqual(v["learning_rate"], 0.001, places=7)
        # one checkpoint per epoch, the newest 3 kept
        self.assertEqual(len(glob.glob(os.path.join(d, "checkpoints", "ckpt-*.kiln"))), 3)

    def reference_run(self):
        """An uninterrupted run's final checkpoint (computed once)."""
        if not hasattr(Train, "_reference"):
            d = self.workdir("reference")
            run = self.write_run(d, small_run(records=4096, epochs=3))
            r = kiln("train", "--config", run, "--checkpoint-every", "7", "--logdir", "", "--threads", "2", cwd=d)
            self.assertEqual(r.returncode, 0, r.stderr[-2000:])
            Train._reference = newest_checkpoint(os.path.join(d, "checkpoints"))
        return Train._reference

    def test_resume_after_sigkill_is_bitwise_identical(self):
        want = open(self.reference_run(), "rb").read()
        rng = random.Random(int(os.environ.get("KILN_TEST_SEED", time.time())))
        for attempt in range(5):
            d = self.workdir("killed%d" % attempt)
            run = self.write_run(d, small_run(records=4096, epochs=3))
            args = [KILN, "train", "--config", run, "--checkpoint-every", "7", "--logdir", "", "--threads", "2"]
            p = subprocess.Popen(args, cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.time() + 60
            while time.time() < deadline and not newest_checkpoint(os.path.join(d, "checkpoints")) and p.poll() is None:
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 0.5))
            p.send_signal(signal.SIGKILL)
            p.wait()
            before = newest_checkpoint(os.path.join(d, "checkpoints"))
            if before is None or before.endswith("%010d.kiln" % (3 * 128)):
                continue  # finished (or never checkpointed) before the kill: try again
            r = kiln("train", "--config", run, "--checkpoint-every", "7", "--logdir", "", "--threads", "2", "--resume", cwd=d)
            self.assertEqual(r.returncode, 0, r.stderr[-2000:])
            self.assertIn("resuming from", r.stderr)
            got = open(newest_checkpoint(os.path.join(d, "checkpoints")), "rb").read()
            self.assertEqual(got, want, "killed after %s: the resumed run's final checkpoint differs" % os.path.basename(before))
            return
        self.fail("the run always ended before SIGKILL")

    def test_corrupt_checkpoint_is_skipped(self):
        want = open(self.reference_run(), "rb").read()
        d = self.workdir("corrupt")
        run = self.write_run(d, small_run(records=4096, epochs=3))
        args = ["train", "--config", run, "--checkpoint-every", "7", "--logdir", "", "--threads", "2"]
        r = kiln(*args, "--epochs", "2", cwd=d)
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        ckpts = sorted(glob.glob(os.path.join(d, "checkpoints", "ckpt-*.kiln")))
        self.assertEqual(len(ckpts), 3)
        # the newest torn in half, the one before it with a flipped byte: resume from the third
        data = open(ckpts[-1], "rb").read()
        open(ckpts[-1], "wb").write(data[:len(data) // 2])
        data = bytearray(open(ckpts[-2], "rb").read())
        data[len(data) // 2] ^= 0x40
        open(ckpts[-2], "wb").write(bytes(data))
        r = kiln(*args, "--resume", cwd=d)
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        self.assertIn(os.path.basename(ckpts[-1]), r.stderr)
        self.assertIn(os.path.basename(ckpts[-2]), r.stderr)
        self.assertIn("resuming from checkpoints/%s" % os.path.basename(ckpts[-3]), r.stderr)
        got = open(newest_checkpoint(os.path.join(d, "checkpoints")), "rb").read()
        self.assertEqual(got, want)

    def test_resume_without_checkpoints_starts_fresh(self):
        d = self.workdir("fresh")
        run = self.write_run(d, small_run(records=256, epochs=1))
        r = kiln("train", "--config", run, "--resume", "--logdir", "", cwd=d)
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        self.assertIn("no checkpoint", r.stderr)

    def mpi_train(self, d, run, np_, extra=()):
        cmd = ["mpirun", "-np", str(np_), KILN, "train", "--config", run, "--threads", "1", "--log-every", "8",
               "--logdir", "runs", "--metrics-out", "metrics.json"] + list(extra)
        return subprocess.run(cmd, cwd=d, capture_output=True, text=True, timeout=600, env=MPI_ENV)

    def loss_curve(self, d):
        files = glob.glob(os.path.join(d, "runs", "events.out.tfevents.*"))
        self.assertEqual(len(files), 1, "rank 0 alone writes TensorBoard events")
        return [(step, v["loss"]) for step, _, v in tfevents.read_events(files[0]) if "loss" in v]

    def test_mpi_two_processes_follow_one_process(self):
        layers = ["flatten", {"dense": {"units": 64, "activation": "relu"}}, {"dense": {"units": 10}}]
        curves = []
        for np_ in (1, 2):
            d = self.workdir("mpi%d" % np_)
            run = self.write_run(d, small_run(records=2048, epochs=2, layers=layers, batch_size=64))
            r = self.mpi_train(d, run, np_)
            self.assertEqual(r.returncode, 0, r.stderr[-3000:])
            self.assertEqual(len(glob.glob(os.path.join(d, "checkpoints", "ckpt-*.kiln"))), 2, "rank 0 alone checkpoints")
            curves.append(self.loss_curve(d))
            m = json.load(open(os.path.join(d, "metrics.json")))
            self.assertEqual(m["steps"], 2 * 32)
        one, two = curves
        self.assertEqual([s for s, _ in one], [s for s, _ in two])
        self.assertGreater(len(one), 8)
        np.testing.assert_allclose([l for _, l in two], [l for _, l in one], rtol=1e-4)

    def test_mpi_ranks_refuse_a_different_run_file(self):
        d = self.workdir("mpi_mismatch")
        a = self.write_run(d, small_run(records=256, epochs=1), "a.json")
        b = self.write_run(d, small_run(records=256, epochs=1, seed=8), "b.json")
        cmd = ["mpirun", "-np", "1", KILN, "train", "--config", a, "--logdir", "", ":", "-np", "1", KILN, "train", "--config", b,
               "--logdir", ""]
        r = subprocess.run(cmd, cwd=d, capture_output=True, text=True, timeout=120, env=MPI_ENV)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("every rank must run the same", r.stderr)

    def test_mpi_job_stops_when_a_rank_fails(self):
        """Rank 0 cannot make its checkpoint directory (a file is in the way): it fails at once with the reason,
        and mpirun stops the job rather than leave rank 1 waiting in an all-reduce."""
        d = self.workdir("mpi_fail")
        open(os.path.join(d, "blocker"), "w").close()
        run = self.write_run(d, small_run(records=2048, epochs=3))
        cmd = ["mpirun", "-np", "2", KILN, "train", "--config", run, "--threads", "1", "--logdir", "", "--checkpoint-dir",
               "blocker/checkpoints"]
        r = subprocess.run(cmd, cwd=d, capture_output=True, text=True, timeout=120, env=MPI_ENV)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("checkpoint directory: ", r.stderr)
        self.assertIn("cannot create the directory blocker/checkpoints: Not a directory", r.stderr)
        r = kiln("train", "--config", run, "--checkpoint-dir", "blocker/checkpoints", cwd=d)
        self.assertEqual(r.returncode, 2)
        self.assertNotIn("epoch end", r.stderr)  # refused before training, not after the first epoch

    def test_flags_override_the_run_file(self):
        d = self.workdir("flags")
        run = self.write_run(d, small_run(records=640, epochs=5))
        r = kiln("train", "--config", run, "--epochs", "1", "--batch-size", "64", "--lr", "0.01", "--seed", "3",
                 "--threads", "1", "--logdir", "", "--metrics-out", "m.json", cwd=d)
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        m = json.load(open(os.path.join(d, "m.json")))
        self.assertEqual((m["epochs"], m["steps"]), (1, 10))

    def test_run_file_errors_name_the_key(self):
        d = self.workdir("errors")
        base = small_run(records=64, epochs=1)
        cases = [
            (dict(base, optimiser="adam"), "unknown key 'optimiser'"),
            (dict(base, model={"layers": ["flatten", {"dense": {"units": 10, "activaton": "relu"}}]}),
             "model.layers[1].dense: unknown key 'activaton'"),
            (dict(base, model={"layers": ["flatten", {"densee": {}}]}), "unknown layer 'densee'"),
            (dict(base, model={"layers": [{"dense": {"units": 10}}]}), "add a flatten layer"),
            (dict(base, optimizer="adagrad"), "unknown optimizer 'adagrad'"),
            (dict(base, loss="hinge"), "unknown loss 'hinge'"),
            (dict(base, data=dict(base["data"], stages=[SCALE, {"batch": 32}])), "data.stages[1]: remove the batch stage"),
            (dict(base, features="pixels"), "no feature 'pixels'"),
            (dict(base, validation_split=0.2), "not both"),
        ]
        for run, text in cases:
            path = self.write_run(d, run)
            r = kiln("train", "--config", path, "--logdir", "", cwd=d)
            self.assertEqual(r.returncode, 2, (text, r.stderr))
            self.assertIn(text, r.stderr)
        with open(os.path.join(d, "broken.json"), "w") as f:
            f.write('{"model": ')
        r = kiln("train", "--config", "broken.json", cwd=d)
        self.assertEqual(r.returncode, 2)
        self.assertIn("not valid JSON", r.stderr)
        r = kiln("train", "--config", "absent.json", cwd=d)
        self.assertEqual(r.returncode, 2)
        self.assertIn("absent.json", r.stderr)
        r = kiln("train", "--epochs", "-1", cwd=d)
        self.assertEqual(r.returncode, 2)

    def test_validation_split_holds_out_the_last_records(self):
        d = self.workdir("split")
        run = small_run(records=1000, epochs=1)
        run["data"]["stages"] = [SCALE]
        del run["validation_data"]
        run["data"]["source"] = {"format": "idx", "path": FMNIST + "/t10k-images-idx3-ubyte.gz"}
        path = self.write_run(d, dict(run, validation_split=0.2))
        r = kiln("train", "--config", path, "--logdir", "", "--metrics-out", "m.json", "--batch-size", "100", cwd=d)
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        m = json.load(open(os.path.join(d, "m.json")))
        self.assertEqual(m["steps"], 80)  # 8000 of the 10000 test images train, 2000 validate
        self.assertGreater(m["test_accuracy"], 0.5)

    def test_export_versions_and_eval(self):
        d = self.workdir("export")
        run = small_run(records=2048, epochs=1)
        path = self.write_run(d, run)
        for version in (1, 2):
            r = kiln("train", "--config", path, "--logdir", "", "--export", "repo/fmnist", "--metrics-out", "m.json", cwd=d)
            self.assertEqual(r.returncode, 0, r.stderr[-2000:])
            self.assertIn("exported version %d" % version, r.stderr)
            self.assertEqual(sorted(os.listdir(os.path.join(d, "repo", "fmnist", str(version)))),
                             ["manifest.json", "model.onnx", "preprocess.json", "schema.json"])
        # no temporary left: the versions and the registry's lock file
        self.assertEqual(sorted(os.listdir(os.path.join(d, "repo", "fmnist"))), [".lock", "1", "2"])
        # kiln eval on the raw validation records, through the exported preprocessing: the trainer's accuracy
        raw = {"source": run["validation_data"]["source"], "stages": [{"take": 1000}]}
        with open(os.path.join(d, "raw.json"), "w") as f:
            json.dump(raw, f)
        r = kiln("eval", "repo/fmnist/2", "--pipeline", "raw.json", "--json", cwd=d)
        self.assertEqual(r.returncode, 0, r.stderr)
        got = json.loads(r.stdout)
        self.assertEqual(got["records"], 1000)
        self.assertAlmostEqual(got["accuracy"], json.load(open(os.path.join(d, "m.json")))["test_accuracy"], delta=0.002)
        r = kiln("eval", "repo/fmnist/7", FMNIST + "/t10k-images-idx3-ubyte.gz", cwd=d)
        self.assertEqual(r.returncode, 2)
        self.assertIn("repo/fmnist/7", r.stderr)

    def test_metrics_port(self):
        d = self.workdir("metrics")
        path = self.write_run(d, small_run(records=4096, epochs=50))
        p = subprocess.Popen([KILN, "train", "--config", path, "--logdir", "", "--metrics-port", "0", "--metrics-host", "127.0.0.1",
                              "--threads", "1"], cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            line = p.stderr.readline()
            self.assertIn("training metrics on http://127.0.0.1:", line)
            url = line.split()[-1]
            deadline, families = time.time() + 60, {}
            while time.time() < deadline:
                text = urllib.request.urlopen(url, timeout=5).read().decode()
                families = {f.name: f for f in text_string_to_metric_families(text)}
                if families["kiln_train_steps"].samples[0].value > 0:
                    break
                time.sleep(0.05)
            self.assertGreater(families["kiln_train_steps"].samples[0].value, 0)
            for name in ["kiln_train_loss", "kiln_train_samples_per_second", "kiln_train_learning_rate", "kiln_train_epoch",
                         "kiln_train_last_step_timestamp_seconds", "kiln_train_step_seconds"]:
                self.assertIn(name, families)
            self.assertAlmostEqual(families["kiln_train_learning_rate"].samples[0].value, 0.001)
            with self.assertRaises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(url.replace("/metrics", "/other"), timeout=5)
            self.assertEqual(e.exception.code, 404)
        finally:
            p.kill()
            p.communicate()

    def test_help(self):
        r = kiln("train", "--help")
        self.assertEqual(r.returncode, 0)
        for flag in ["--config", "--epochs", "--batch-size", "--threads", "--seed", "--lr", "--resume", "--metrics-out",
                     "--export", "--precision"]:
            self.assertIn(flag, r.stdout)


if __name__ == "__main__":
    KILN = os.path.abspath(sys.argv.pop(1))
    unittest.main()
