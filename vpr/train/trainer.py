"""The training loop of NetVLAD/SARE (baseline losses) and of one SFRS generation (docs/method.md §4).

Per epoch the training queries are shuffled with a seeded generator and cut into chunks of `cache_size`.
For every chunk the current model describes all training images (shared over the ranks), the tuples of
the chunk are mined (`vpr.train.mining`), and the ranks train on them step by step. Validation on the val
split closes every epoch; `model_best.pth` follows the val R@5 (strictly better), every epoch's model is
kept, and `last.pth` is the final epoch (the next SFRS generation's teacher). The loss of one step is
`vpr.train.objective`; the run directory's files and outputs, `vpr.train.run_directory`.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from vpr import distributed, interrupt
from vpr.cluster import read_centers
from vpr.data.index import Index
from vpr.errors import VprError
from vpr.evaluate import recall_at, search
from vpr.extract import extract_features
from vpr.models import EmbedNet, ModelConfig, build_model, load_model, load_trunk, save_model
from vpr.models.backbones import backbone_choices
from vpr.models.checkpoint import read_checkpoint_meta
from vpr.numeric_precision import resolve_precision
from vpr.progress import progress
from vpr.stats import SIGNIFICANCE, drop_p_value, interval_columns
from vpr.train.checkpointing import (
    RunState,
    StopFlag,
    check_finite,
    differences,
    input_identity,
    load_state,
    rng_state,
    save_state,
    set_rng_state,
)
from vpr.train.config import TrainConfig
from vpr.train.data import RankStepSampler, TupleDataset, collate_tuples
from vpr.train.mining import Miner, Tuple
from vpr.train.objective import TupleForward, batch_loss
from vpr.train.run_directory import CannotRecreate, RunPaths
from vpr.train.training_log import RECALL_AT, write_training_log

log = logging.getLogger(__name__)


def initial_model(cfg: TrainConfig, centers: str | Path, trunk: str | Path | None,
                  training: bool = True) -> EmbedNet:
    """The starting point of every run and every SFRS generation: trunk weights + NetVLAD from centers.

    ``cfg.trainable_from`` only matters for training: with ``training=False`` a value that does not fit the
    backbone (the vgg16 default conv5 for efficientnet_lite0) gives way to the backbone's default.
    """
    torch.manual_seed(cfg.seed)
    trainable_from = cfg.trainable_from
    if not training and trainable_from not in backbone_choices(cfg.backbone):
        trainable_from = None
    model = build_model(ModelConfig(backbone=cfg.backbone, num_clusters=cfg.num_clusters,
                                    trainable_from=trainable_from, image_size=tuple(cfg.image_size)))
    if trunk is not None:
        load_trunk(model, trunk)
    centroids, descriptors = read_centers(centers, cfg.num_clusters, model.base_model.dim)
    model.init_netvlad(centroids, descriptors)
    return model


def save_initial_model(cfg: TrainConfig, centers: str | Path, trunk: str | Path | None, out: str | Path,
                       **meta) -> EmbedNet:
    """Write the untrained starting point (trunk + NetVLAD from ``centers``) as a checkpoint: the
    'off-the-shelf' model. Needs no index; ``meta`` is stored beside the weights."""
    model = initial_model(cfg, centers, trunk, training=False)
    check_finite(model, "in the initial model (trunk and centers)")
    save_model(out, model, **{"epoch": -1, "generation": cfg.generation, "method": cfg.method,
                              "loss": cfg.loss, "train_config": cfg.to_dict(), **meta})
    return model


class Trainer:
    def __init__(self, cfg: TrainConfig, train_index: Index, val_index: Index, centers: str | Path,
                 out: str | Path, trunk: str | Path | None = None, teacher: str | Path | None = None,
                 info: distributed.DistInfo | None = None, root: str | Path | None = None):
        self.cfg, self.info = cfg, info or distributed.init()
        self.train_index, self.val_index = train_index, val_index
        if train_index.train_positives is None:
            raise VprError(f"{train_index.path}: not a training split (no 10 m positives); index the "
                           "training .mat, or use --split train for custom data")
        self.paths = RunPaths(Path(out))
        self.sfrs = cfg.method == "sfrs"
        device = self.info.device
        self.precision = resolve_precision(cfg.precision, device, "the training forward")
        self.extract_precision = resolve_precision(cfg.extract_precision, device, "mining and validation")
        self.model = initial_model(cfg, centers, trunk).to(device)
        self.teacher = None
        if self.sfrs and cfg.generation >= 1:
            if teacher is None:
                raise VprError(f"SFRS generation {cfg.generation} needs --teacher (the last checkpoint of "
                               f"generation {cfg.generation - 1})")
            self.teacher = load_model(teacher, map_location=device).eval().requires_grad_(False)
            if self.teacher.vlad_dim != self.model.vlad_dim or self.teacher.pca_layer is not None:
                raise VprError(f"{teacher}: the teacher's descriptors ({self.teacher.output_dim}-d) do not "
                               f"match the student's ({self.model.vlad_dim}-d, no PCA)")
        elif teacher is not None:
            log.warning("--teacher is ignored: only SFRS generations >= 1 use a teacher")
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=cfg.step_size,
                                                         gamma=cfg.gamma)
        forward = TupleForward(self.model)
        if self.info.distributed:
            ids = [device.index] if device.type == "cuda" else None
            forward = DistributedDataParallel(forward, device_ids=ids)
        self.forward = forward
        # the mining's distance work runs where the model is (the GPU of this rank when there is one)
        self.miner = Miner(train_index.train_positives, train_index.train_nonnegatives, cfg.neg_num,
                           cfg.neg_pool, cfg.pos_num, cfg.pos_pool, device=device)
        self.q_files, self.db_files = train_index.query_files(), train_index.db_files()
        self.state = RunState()
        # What the weights are computed from, besides the options: hashed by rank 0 when the run starts.
        self.input_files = {"train_index": train_index.path, "val_index": val_index.path, "centers": centers,
                            "trunk": trunk, "teacher": teacher if self.teacher is not None else None}
        self.root = None if root is None else str(root)
        self.inputs: dict | None = None
        self._saved: dict | None = None   # rank 0's loaded state between deciding and restoring

    # ------------------------------------------------------------------ features
    def extract_descriptors(self, files: list[Path], desc: str, exif_orientation: bool) -> np.ndarray:
        """Descriptors of ``files`` (raw VLAD, no PCA) on every rank; each rank extracts one slice.
        ``exif_orientation``: the attribute of the index they come from."""
        n = len(files)
        mine = [files[i % n] for i in distributed.shard(n, self.info.rank, self.info.world_size)]
        local = extract_features(self.model, mine, tuple(self.cfg.image_size), self.cfg.extract_batch_size,
                                 self.cfg.workers, device=self.info.device,
                                 desc=desc if self.info.is_main else None, precision=self.extract_precision,
                                 exif_orientation=exif_orientation)
        gathered = distributed.all_gather_rows(torch.from_numpy(local).to(self.info.device), n).cpu().numpy()
        if self.info.device.type == "cuda":
            torch.cuda.empty_cache()   # the gather's device memory back to the driver (faiss allocates there)
        return gathered

    def validate(self) -> dict[int, float]:
        exif = self.val_index.exif_orientation
        db = self.extract_descriptors(self.val_index.db_files(), "val: database", exif)
        q = self.extract_descriptors(self.val_index.query_files(), "val: queries", exif)
        # once, on rank 0 and its own device (not an index per rank, all on GPU 0); the others get the result
        idx = None
        if self.info.is_main:
            device = self.info.device
            _, idx = search(db, q, max(RECALL_AT), gpu=device.index if device.type == "cuda" else None)
        idx = distributed.broadcast_object(idx)
        return recall_at(idx, self.val_index.positives, RECALL_AT)

    def jaccard_rows(self, anchors: list[int], q_feats: np.ndarray, db_feats: np.ndarray) -> dict:
        """Re-ranked (k-reciprocal) distances of the chunk's anchors to their 10 m positives."""
        from vpr.rerank import rerank_pairs

        pairs = {a: self.train_index.train_positives[a] for a in anchors}
        return rerank_pairs(q_feats, db_feats, pairs, self.cfg.rerank_k1, self.cfg.rerank_k2,
                            self.cfg.rerank_lambda, square_input=True, device=self.info.device)

    # ------------------------------------------------------------------ state
    def save_resume(self) -> None:
        check_finite(self.model, "before saving the training state")
        states = distributed.gather_objects(rng_state())
        if self.info.is_main:
            save_state(self.paths.resume, {
                "config": self.cfg.to_dict(), "inputs": self.inputs, "run": self.state.to_dict(),
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "miner": self.miner.state_dict(), "rng": states})
        distributed.barrier()

    def restore(self, saved: dict) -> None:
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.miner.load_state_dict(saved["miner"])
        rngs = saved["rng"]
        if len(rngs) == self.info.world_size:
            set_rng_state(rngs[self.info.rank])
        self.state = saved["run"]

    def start(self, on_mismatch: str) -> str:
        """Decide, on rank 0, how this invocation starts; the same answer on every rank.

        "fresh" (no state, or a mismatching one discarded), "resume" (a state of this very configuration
        and these inputs), or "done" (finished; missing outputs recreated). A mismatch with
        ``on_mismatch="refuse"``, or a file that is no training state, is a VprError on every rank.
        """
        decision: tuple[str, str] = ("error", "rank 0 did not decide")
        if self.info.is_main:
            try:
                decision = ("ok", self._decide(on_mismatch))
            except VprError as err:
                decision = ("error", str(err))
        kind, value = distributed.broadcast_object(decision)
        if kind == "error":
            raise VprError(value)
        if value == "resume":
            self.restore(self._saved if self.info.is_main else load_state(self.paths.resume))
        self._saved = None
        return value

    def _decide(self, on_mismatch: str) -> str:
        resume = self.paths.resume
        self.inputs = input_identity(self.input_files, self.root)
        if not resume.is_file():
            self.paths.clear("")
            return "fresh"
        saved = load_state(resume)
        diff = differences(saved, self.cfg.to_dict(), self.inputs)
        if not diff and saved["run"].finished:
            self.state = saved["run"]
            try:
                recreated = self.paths.restore_outputs(self.cfg, self.state)
            except CannotRecreate as gone:
                diff = [str(gone)]
            else:
                if recreated:
                    print(f"{self.paths.out}: training already finished; recreated {', '.join(recreated)} "
                          "from the kept epoch checkpoints and the saved history")
                else:
                    print(f"{self.paths.out}: training already finished; nothing to do")
                return "done"
        if diff:
            what = "; ".join(diff)
            if on_mismatch != "restart":
                raise VprError(f"{resume}: this run directory holds a run of a different configuration or "
                               f"inputs ({what}); pass --on-mismatch restart to discard it and train afresh, "
                               "or use another --out directory")
            self.state = RunState()
            self.paths.clear(f"the saved run does not match ({what})")
            return "fresh"
        self._saved = saved
        return "resume"

    def write_log(self) -> None:
        if not self.info.is_main:
            return
        write_training_log(self.paths.log, self.state.history)

    # ------------------------------------------------------------------ loop
    def run(self, on_mismatch: str = "refuse") -> int:
        """Train in the run directory (locked by the caller), resuming or starting as `start` decides."""
        info = self.info
        self.paths.out.mkdir(parents=True, exist_ok=True)
        how = self.start(on_mismatch)
        st = self.state
        if how == "done":
            return 0
        if how == "resume":
            if info.is_main:
                print(f"resuming from {self.paths.resume}: epoch {st.epoch}, chunk {st.chunk}, "
                      f"iteration {st.step}")
        stop = StopFlag().install()
        try:
            # inside refresh, mining and validation a signal stops the process at its next progress
            # update (the training steps poll it themselves, to save their exact state)
            with interrupt.stop_on(lambda: stop.signum):
                if how != "resume" and not st.history:
                    t0 = time.time()
                    recall = self.validate()
                    st.history.append(self._row(-1, recall, RunState(), time.time() - t0))
                    if info.is_main:
                        print("initial model: val " + self._fmt(recall))
                    self.write_log()
                return self._loop(stop)
        except interrupt.StopRequested as stopped:
            # Nothing saved here (other ranks may be inside a collective): the last resume point, at most
            # one chunk's mining or training back, reproduces this run exactly.
            if info.is_main:
                saved = "its last resume point" if self.paths.resume.is_file() else "the start (none yet)"
                print(f"stopped by {stopped}; run the same command again to resume from {saved}", flush=True)
            return 128 + stopped.signum
        finally:
            stop.restore()

    def _loop(self, stop: StopFlag) -> int:
        cfg, info, st = self.cfg, self.info, self.state
        g = info.world_size * cfg.tuple_size
        n_q = self.train_index.num_queries
        for epoch in range(st.epoch, cfg.epochs_this_run):
            perm_gen = torch.Generator().manual_seed(cfg.seed * 1000 + cfg.generation * 100 + epoch)
            order = torch.randperm(n_q, generator=perm_gen).tolist()
            chunks = [order[i:i + cfg.cache_size] for i in range(0, n_q, cfg.cache_size)]
            for c in range(st.chunk, len(chunks)):
                chunk = chunks[c]
                steps = cfg.iters or math.ceil(len(chunk) / g)
                if st.tuples is None:
                    t0 = time.time()
                    exif = self.train_index.exif_orientation
                    what = f"epoch {epoch} chunk {c}: train"
                    q_feats = self.extract_descriptors(self.q_files, f"{what} queries", exif)
                    db_feats = self.extract_descriptors(self.db_files, f"{what} database", exif)
                    jac = None
                    if self.sfrs and cfg.generation >= 1:
                        jac = self.jaccard_rows(chunk, q_feats, db_feats)
                    rng = np.random.default_rng([cfg.seed, cfg.generation, epoch, c])
                    mined = self.miner.mine(chunk, q_feats, db_feats, rng, jac, sfrs=self.sfrs,
                                            desc=f"epoch {epoch} chunk {c}: mining" if info.is_main else None)
                    st.tuples = [mined[i % len(mined)] for i in range(steps * g)]   # wrap-pad
                    # every rank mined on its own: a difference (float32 SFRS rows on GPUs of different
                    # models) would silently train on other tuples than a single process
                    distributed.same_on_every_rank(
                        st.tuples, f"the tuples mined for epoch {epoch}, chunk {c}",
                        "SFRS's k-reciprocal rows are computed in float32 on each rank's device: train on "
                        "GPUs of one model (and one software stack)")
                    st.mining_s += time.time() - t0
                    self.save_resume()   # resume point: a stop before the first step keeps the mining
                if self._train_chunk(epoch, c, steps, stop):
                    return 128 + stop.signum
                st.chunk, st.step, st.tuples = c + 1, 0, None
                self.save_resume()   # resume point: a stop in the next refresh or validation keeps the chunk
            self._end_epoch(epoch)
        st.finished = True
        if info.is_main:
            # The declared outputs are (re)written at the very end from the kept epoch files: a workflow
            # manager may delete them when a job is interrupted, and the resumed run must restore them.
            self.paths.write_final_outputs(self.cfg, self.state)
            self.check_collapse()
        self.save_resume()
        return 0

    def check_collapse(self) -> None:
        """Log a warning when this SFRS generation's best validation R@5 lies below its teacher's (the
        previous generation's best, recorded in the teacher checkpoint) by more than the validation queries'
        noise allows: the one-sided test of `vpr.stats.drop_p_value` at the 5 % level (OpenIBL issue #14 is a
        generation that collapsed unnoticed). The selection across generations (`vpr select`) keeps an
        earlier generation's model then; the warning says why the last generation is worse."""
        teacher = self.input_files["teacher"]
        if teacher is None:
            return
        teacher_r5 = read_checkpoint_meta(teacher).get("best_recall5")
        if not isinstance(teacher_r5, (int, float)) or teacher_r5 < 0:
            return   # a teacher that records no validation (not written by 'vpr train')
        n, student_r5 = self.val_index.num_queries, self.state.best_r5
        p = drop_p_value(student_r5, teacher_r5, n)
        if p < SIGNIFICANCE:
            g = self.cfg.generation
            log.warning(f"SFRS generation {g} collapsed: its best validation R@5 {100 * student_r5:.1f} % "
                        f"lies below its teacher's (generation {g - 1}) {100 * teacher_r5:.1f} % by more "
                        f"than the noise of {n} validation queries allows (one-sided two-proportion z-test, "
                        f"p = {p:.2g} < {SIGNIFICANCE:g}); selection across generations keeps the better "
                        "one; check the learning rate and this generation's log.csv")

    def _train_chunk(self, epoch: int, c: int, steps: int, stop: StopFlag) -> bool:
        """Train the remaining steps of chunk ``c``; True when stopped by a signal (state saved)."""
        cfg, info, st = self.cfg, self.info, self.state
        tuples: list[Tuple] = st.tuples
        dataset = TupleDataset(tuples, self.q_files, self.db_files, tuple(cfg.image_size), cfg.color_jitter,
                               seed_key=[cfg.seed, cfg.generation, epoch, c],
                               exif_orientation=self.train_index.exif_orientation)
        sampler = RankStepSampler(steps, info.rank, info.world_size, cfg.tuple_size, start_step=st.step)
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.workers,
                            collate_fn=collate_tuples, pin_memory=info.device.type == "cuda")
        self.model.train()
        t0 = time.time()
        bar = progress(loader, total=len(sampler), desc=f"epoch {epoch} chunk {c}", unit="step",
                       disable=not info.is_main, interruptible=False)
        for images, layout in bar:
            loss, hard, soft = batch_loss(cfg, self.forward, images, layout, precision=self.precision,
                                          device=info.device, teacher=self.teacher)
            # The logged loss is the mean over all ranks' tuples, as in a single-process run; a NaN or an
            # infinity on any rank reaches every rank's mean, so all ranks stop here, before the step.
            step_loss, step_hard, step_soft = distributed.mean_across_ranks(
                torch.stack([loss.detach(), hard, soft.to(hard.device)])).tolist()
            if not math.isfinite(step_loss):
                raise VprError(f"training diverged: the loss is {step_loss} at epoch {epoch}, chunk {c}, "
                               f"iteration {st.step + 1}; stopped before the optimiser step, nothing saved "
                               "from this epoch; lower --lr (or check the inputs) and start again")
            self.optimizer.zero_grad(set_to_none=True)
            with self.precision.math():   # the backward convolutions too: fp32 is fp32 (TF32 off)
                loss.backward()
            self.optimizer.step()
            st.step += 1
            st.loss_sum += step_loss
            st.hard_loss_sum += step_hard
            st.soft_loss_sum += step_soft
            st.loss_steps += 1
            bar.set_postfix(loss=f"{st.loss_sum / st.loss_steps:.4f}")
            if cfg.print_freq and st.step % cfg.print_freq == 0 and info.is_main:
                print(f"epoch {epoch} chunk {c} iteration {st.step}/{steps}: loss {step_loss:.4f} "
                      f"(mean {st.loss_sum / st.loss_steps:.4f})", flush=True)
            if distributed.any_rank(stop.raised, info.device):
                st.train_s += time.time() - t0
                self.save_resume()
                if info.is_main:
                    print(f"stopped by signal {stop.signum} at epoch {epoch}, chunk {c}, iteration "
                          f"{st.step}; run the same command again to resume")
                return True
        st.train_s += time.time() - t0
        return False

    def _end_epoch(self, epoch: int) -> None:
        cfg, info, st = self.cfg, self.info, self.state
        check_finite(self.model, f"at the end of epoch {epoch}")
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        t0 = time.time()
        recall = self.validate()
        row = self._row(epoch, recall, st, time.time() - t0, lr)
        st.history.append(row)
        is_best = recall[5] > st.best_r5
        if is_best:
            st.best_r5, st.best_epoch = recall[5], epoch
        if info.is_main:
            meta = self._meta(epoch, recall)
            save_model(self.paths.epoch(cfg.generation, epoch, self.sfrs), self.model, **meta)
            if is_best:
                save_model(self.paths.best, self.model, **meta)
            print(f"epoch {epoch}: loss {row['loss']:.4f}, val " + self._fmt(recall)
                  + (" (best)" if is_best else ""))
        st.start_epoch(epoch + 1)
        self.save_resume()
        self.write_log()

    def _meta(self, epoch: int, recall: dict | None = None) -> dict:
        meta = {"epoch": epoch, "generation": self.cfg.generation, "method": self.cfg.method,
                "loss": self.cfg.loss, "best_recall5": self.state.best_r5,
                "train_config": self.cfg.to_dict()}
        if recall is not None:
            meta["recall"] = {str(k): v for k, v in recall.items()}
        return meta

    def _row(self, epoch: int, recall: dict, st: RunState, val_s: float, lr: float = float("nan")) -> dict:
        """The log.csv row of one validation: the epoch's mean losses and times from ``st``."""
        n = max(st.loss_steps, 1)
        return {"generation": self.cfg.generation, "epoch": epoch, "loss": st.loss_sum / n,
                "loss_hard": st.hard_loss_sum / n, "loss_soft": st.soft_loss_sum / n, "lr": lr,
                "recall@1": recall[1], "recall@5": recall[5], "recall@10": recall[10],
                **interval_columns(recall, self.val_index.num_queries),
                "mining_s": round(st.mining_s, 3), "train_s": round(st.train_s, 3),
                "val_s": round(val_s, 3)}

    @staticmethod
    def _fmt(recall: dict) -> str:
        return ", ".join(f"R@{n} {100 * v:.1f}" for n, v in recall.items())
