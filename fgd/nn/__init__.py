"""Models and layers: activations with their hand-written derivatives, the
init-scheme table, the MLP, convolution/pooling ops with their backward
passes, and the CNN.

A model is a frozen, hashable description plus a pytree of parameters. The
model protocol that `make_loss`, `backprop`, `check_gradients`, `fit` and
`sweep` rely on (`fgd.MLP` and `fgd.CNN` both follow it):

    init(key, scheme="small", *, dtype=None, scale=1.0) -> params
    forward(params, X) -> Cache(Z=[Z[1..L]], A=[A[0]=X, A[1..L]])
    apply(params, X) -> A[L];  logits(params, X) -> Z[L];  predict(params, X)
    backward(params, cache, dZ[L]) -> (grads like params, [dZ[1..L]])
    activation(l) -> Activation | None;  output_activation -> Activation
    check_input(X, name);  out_dim
"""


from fgd._lazy import submodule_getattr

__getattr__ = submodule_getattr(__name__)
