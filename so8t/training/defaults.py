"""Defaults of ``so8t train`` (no heavy imports: ``so8t --help`` reads them).

Loss weights, and why:

* ``lm`` 1.0: the next-token loss is the model's own objective and keeps the gates useful for it;
* ``safety`` 1.0: the class-weighted cross-entropy is of order log(3), and its class weights (1/3/5) already
  carry SO8T's priorities;
* ``pet`` 1e-3: PET's squared second difference of RMS-normalised hidden states is of order the hidden size
  (~6 H in theory, ~150-200 measured on the embedded model, H = 256); 1e-3 keeps even the final x1.0 phase
  below the cross-entropies instead of drowning them.
"""

DEFAULT_WEIGHTS = {"lm": 1.0, "safety": 1.0, "pet": 1e-3}
STEPS = 200
BATCH_SIZE = 8
LR = 3e-3
SEED = 0
EVAL_EVERY = 0
SAVE_EVERY = 50
COMPUTE_DTYPE = "auto"  # bfloat16 on CUDA, float32 on the CPU (TrainOptions.resolved)
DEVICE = "auto"  # CUDA when torch sees a GPU, else the CPU
MIN_REFUSE_RECALL = 0.9  # the safety head calibration's floor on REFUSE recall (so8t.training.calibration)
