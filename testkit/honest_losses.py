"""Honest, independently written solutions of the ``losses.py`` regions (for :mod:`testkit.honest_code`).

Each region of ``reference/losses.py`` (keyed by the function it sits in) has four alternatives
besides the reference's own: the kind of variation real students show (other built-ins, loops,
helper variables, a different but equivalent formula).  They are all correct; a fast test checks
each against the reference on random inputs, values and gradients.
``SoftmaxCrossEntropy.forward`` and ``.backward`` are chosen together (what the forward saves is
what the backward reads).
"""
from __future__ import annotations

LOSSES: dict[str, list[str]] = {
    "l1_loss": [
        "diff = torch.abs(pred - target)\nreturn diff.sum() / diff.numel()\n",
        "return torch.mean(torch.abs(target - pred))\n",
        "errors = (pred - target).flatten()\nreturn errors.abs().sum() / errors.shape[0]\n",
        "absolute = torch.where(pred > target, pred - target, target - pred)\nreturn absolute.mean()\n",
    ],
    "mse_loss": [
        "diff = pred - target\nreturn (diff * diff).mean()\n",
        "return torch.mean(torch.pow(pred - target, 2))\n",
        "squared = (target - pred).square()\nreturn squared.sum() / squared.numel()\n",
        "n = pred.numel()\nreturn ((pred - target) ** 2).sum() / n\n",
    ],
    "softmax": [
        "m, _ = torch.max(logits, dim=dim, keepdim=True)\ne = torch.exp(logits - m)\n"
        "return e / torch.sum(e, dim=dim, keepdim=True)\n",
        "z = logits - logits.max(dim, keepdim=True).values\nnumerator = z.exp()\n"
        "denominator = numerator.sum(dim, keepdim=True)\nreturn numerator / denominator\n",
        "stable = logits - torch.amax(logits, dim=dim, keepdim=True)\nweights = torch.exp(stable)\n"
        "total = weights.sum(dim=dim, keepdim=True)\nreturn weights * (1.0 / total)\n",
        "shift = logits.max(dim=dim, keepdim=True)[0]\nexps = (logits - shift).exp()\n"
        "return exps.div(exps.sum(dim=dim, keepdim=True))\n",
    ],
    "binary_cross_entropy": [
        "p = prob.clamp(min=_TINY_PROB)\nq = (1.0 - prob).clamp(min=_TINY_PROB)\n"
        "loss = target * torch.clamp(torch.log(p), min=LOG_CLAMP) + (1 - target) * torch.clamp(torch.log(q), min=LOG_CLAMP)\n"
        "return -loss.mean()\n",
        "log_prob = torch.clamp(torch.log(torch.clamp(prob, min=_TINY_PROB)), min=LOG_CLAMP)\n"
        "log_complement = torch.clamp(torch.log(torch.clamp(1 - prob, min=_TINY_PROB)), min=LOG_CLAMP)\n"
        "per_item = -(target * log_prob) - (1 - target) * log_complement\nreturn per_item.sum() / per_item.numel()\n",
        "floor = torch.full_like(prob, _TINY_PROB)\nlowest = torch.full_like(prob, LOG_CLAMP)\n"
        "first = torch.maximum(torch.maximum(prob, floor).log(), lowest)\n"
        "second = torch.maximum(torch.maximum(1.0 - prob, floor).log(), lowest)\n"
        "return torch.mean(-(target * first + (1.0 - target) * second))\n",
        "def safe_log(x):\n    return torch.log(x.clamp(min=_TINY_PROB)).clamp(min=LOG_CLAMP)\n\n"
        "return -(target * safe_log(prob) + (1 - target) * safe_log(1 - prob)).mean()\n",
    ],
    "cross_entropy": [
        "m = logits.max(dim=1, keepdim=True).values.detach()\n"
        "lse = m.squeeze(1) + torch.log(torch.exp(logits - m).sum(dim=1))\n"
        "correct = logits[torch.arange(logits.shape[0]), target.long()]\nreturn (lse - correct).mean()\n",
        "shifted = logits - logits.amax(dim=1, keepdim=True)\n"
        "log_probs = shifted - shifted.exp().sum(dim=1, keepdim=True).log()\nn = logits.shape[0]\n"
        "return -log_probs[torch.arange(n), target.long()].sum() / n\n",
        "biggest = torch.max(logits, dim=1, keepdim=True)[0]\n"
        "normaliser = torch.log(torch.sum(torch.exp(logits - biggest), dim=1)) + biggest[:, 0]\n"
        "one_hot = torch.zeros_like(logits).scatter_(1, target.long().view(-1, 1), 1.0)\n"
        "return torch.mean(normaliser - (one_hot * logits).sum(dim=1))\n",
        "row_max, _ = logits.max(dim=1)\ncentered = logits - row_max[:, None]\nlog_z = centered.exp().sum(1).log()\n"
        "true_logit = centered.gather(1, target.long()[:, None])[:, 0]\nreturn (log_z - true_logit).mean()\n",
    ],
    "SoftmaxCrossEntropy.forward": [
        "ctx.save_for_backward(logits, target)\nreturn cross_entropy(logits, target)\n",
        "n = logits.shape[0]\nprobabilities = softmax(logits, dim=1)\none_hot = torch.zeros_like(logits)\n"
        "one_hot[torch.arange(n), target.long()] = 1.0\nctx.save_for_backward(probabilities, one_hot)\n"
        "return cross_entropy(logits, target)\n",
        "ctx.save_for_backward(softmax(logits, dim=1), target.long())\nloss = cross_entropy(logits, target)\nreturn loss\n",
        "probs = softmax(logits, dim=1)\nmean_loss = cross_entropy(logits, target)\nctx.n_rows = logits.shape[0]\n"
        "ctx.save_for_backward(probs, target)\nreturn mean_loss\n",
    ],
    "SoftmaxCrossEntropy.backward": [
        "logits, target = ctx.saved_tensors\ngrad = softmax(logits, dim=1)\n"
        "grad[torch.arange(len(target)), target.long()] -= 1\nreturn grad_output * grad / logits.shape[0], None\n",
        "probabilities, one_hot = ctx.saved_tensors\n"
        "return (probabilities - one_hot) / probabilities.shape[0] * grad_output, None\n",
        "p, t = ctx.saved_tensors\ng = p.clone()\nfor i in range(g.shape[0]):\n    g[i, t[i]] = g[i, t[i]] - 1.0\n"
        "g = g / g.shape[0]\nreturn g * grad_output, None\n",
        "probs, target = ctx.saved_tensors\n"
        "target_mask = torch.eye(probs.shape[1], dtype=probs.dtype, device=probs.device)[target.long()]\n"
        "return grad_output * (probs - target_mask) / ctx.n_rows, None\n",
    ],
    "l1_penalty": [
        "total = torch.zeros(())\nfor name, param in model.named_parameters():\n    if name.endswith(\"weight\"):\n"
        "        total = total + param.abs().sum()\nreturn total\n",
        "weights = [p for n, p in model.named_parameters() if n.endswith(\"weight\")]\n"
        "return torch.stack([w.abs().sum() for w in weights]).sum()\n",
        "penalty = 0.0\nfor layer_name, tensor in model.named_parameters():\n    if not layer_name.endswith(\"weight\"):\n"
        "        continue\n    penalty = penalty + torch.sum(torch.abs(tensor))\nreturn penalty\n",
        "selected = dict(model.named_parameters())\nkeys = [k for k in selected if k.endswith(\"weight\")]\n"
        "return sum(torch.abs(selected[k]).sum() for k in keys)\n",
    ],
    "l2_penalty": [
        "total = torch.zeros(())\nfor name, param in model.named_parameters():\n    if name.endswith(\"weight\"):\n"
        "        total = total + (param * param).sum()\nreturn total\n",
        "weights = [p for n, p in model.named_parameters() if n.endswith(\"weight\")]\n"
        "return torch.stack([w.pow(2).sum() for w in weights]).sum()\n",
        "penalty = 0.0\nfor layer_name, tensor in model.named_parameters():\n    if not layer_name.endswith(\"weight\"):\n"
        "        continue\n    penalty = penalty + torch.sum(torch.square(tensor))\nreturn penalty\n",
        "selected = dict(model.named_parameters())\nkeys = [k for k in selected if k.endswith(\"weight\")]\n"
        "return sum((selected[k] ** 2).sum() for k in keys)\n",
    ],
}
# Regions whose variant follows another region's choice.
LINKED = {"SoftmaxCrossEntropy.backward": "SoftmaxCrossEntropy.forward"}
