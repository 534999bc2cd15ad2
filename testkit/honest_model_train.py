"""Honest, independently written solutions of the ``model.py`` and ``train.py`` regions (for :mod:`testkit.honest_code`).

Four alternatives per region besides the reference's own; ``NoteCNN.__init__`` is built from
three independent parts instead (five ways each to write the convs, the pool and the fc).  Every
variant creates conv1..conv4 then fc in that order, so a given seed gives the same initial
weights as the reference (what a real class that keeps the pipeline's seed looks like).
"""
from __future__ import annotations

# NoteCNN.__init__ is composed of three independent choices (how the convs, the pool and the fc
# are written), so two students who write their convs alike still differ elsewhere.
INIT_PARTS: dict[str, list[str]] = {
    "conv": [
        "".join(f'self.conv{i} = nn.Conv2d({a}, {b}, kernel_size=3, padding="same")\n'
                for i, (a, b) in enumerate(((1, 16), (16, 32), (32, 64), (64, 128)), 1)),
        "self.conv1 = nn.Conv2d(1, 16, 3, padding=1)\nself.conv2 = nn.Conv2d(16, 32, 3, padding=1)\n"
        "self.conv3 = nn.Conv2d(32, 64, 3, padding=1)\nself.conv4 = nn.Conv2d(64, 128, 3, padding=1)\n",
        "channels = [1, 16, 32, 64, 128]\nfor i in range(4):\n"
        "    setattr(self, f\"conv{i + 1}\", nn.Conv2d(channels[i], channels[i + 1], kernel_size=(3, 3), padding=\"same\"))\n",
        "def block(cin, cout):\n    return nn.Conv2d(cin, cout, kernel_size=3, stride=1, padding=1, bias=True)\n\n"
        "self.conv1, self.conv2 = block(1, 16), block(16, 32)\nself.conv3, self.conv4 = block(32, 64), block(64, 128)\n",
        "widths = {\"conv1\": (1, 16), \"conv2\": (16, 32), \"conv3\": (32, 64), \"conv4\": (64, 128)}\n"
        "for name, (c_in, c_out) in widths.items():\n    self.add_module(name, nn.Conv2d(c_in, c_out, 3, 1, 1))\n",
    ],
    "pool": ["self.pool = nn.MaxPool2d(2, 2)\n", "self.pool = nn.MaxPool2d(kernel_size=2, stride=2)\n",
             "self.pool = nn.MaxPool2d(2)\n", "self.pool = nn.MaxPool2d((2, 2))\n",
             "pooling = nn.MaxPool2d(kernel_size=2)\nself.pool = pooling\n"],
    "fc": ["self.fc = nn.Linear(128 * 4 * 4, n_classes)\n", "self.fc = nn.Linear(2048, n_classes)\n",
           "self.fc = nn.Linear(in_features=128 * 16, out_features=n_classes)\n",
           "flat = 128 * 4 * 4\nself.fc = nn.Linear(flat, n_classes, bias=True)\n",
           "head_inputs = 2048\nself.fc = nn.Linear(head_inputs, n_classes, True)\n"],
}

MODEL: dict[str, list[str]] = {
    "NoteCNN.forward": [
        "x = self.pool(torch.relu(self.conv1(x)))\nx = self.pool(torch.relu(self.conv2(x)))\n"
        "x = self.pool(torch.relu(self.conv3(x)))\nx = self.pool(torch.relu(self.conv4(x)))\n"
        "x = x.reshape(x.shape[0], -1)\nreturn self.fc(x)\n",
        "out = x\nfor index in range(1, 5):\n    layer = getattr(self, f\"conv{index}\")\n"
        "    out = torch.clamp(layer(out), min=0)\n    out = self.pool(out)\nreturn self.fc(out.flatten(start_dim=1))\n",
        "h = x\nfor conv in [self.conv1, self.conv2, self.conv3, self.conv4]:\n    h = conv(h).relu()\n    h = self.pool(h)\n"
        "batch = h.size(0)\nlogits = self.fc(h.view(batch, 2048))\nreturn logits\n",
        "features = self.pool(self.conv1(x).clamp_min(0))\nfeatures = self.pool(self.conv2(features).clamp_min(0))\n"
        "features = self.pool(self.conv3(features).clamp_min(0))\nfeatures = self.pool(self.conv4(features).clamp_min(0))\n"
        "return self.fc(torch.reshape(features, (len(features), -1)))\n",
    ],
}

TRAIN: dict[str, list[str]] = {
    "train_one_epoch": [
        "model.train()\nrunning, seen = 0.0, 0\nfor batch, target in loader:\n    batch = batch.to(device).float()\n"
        "    target = target.to(device)\n    optimizer.zero_grad()\n    output = model(batch)\n"
        "    loss = loss_fn(output, target)\n    loss.backward()\n    optimizer.step()\n"
        "    running += loss.item() * len(target)\n    seen += len(target)\nreturn running / max(seen, 1)\n",
        "model.train(True)\nlosses_seen = []\nsizes = []\nfor step, (xb, yb) in enumerate(loader):\n"
        "    xb, yb = xb.float().to(device), yb.to(device)\n    logits = model(xb)\n    batch_loss = loss_fn(logits, yb)\n"
        "    optimizer.zero_grad(set_to_none=True)\n    batch_loss.backward()\n    optimizer.step()\n"
        "    losses_seen.append(float(batch_loss.detach()) * yb.numel())\n    sizes.append(yb.numel())\n"
        "if not sizes:\n    return 0.0\nreturn sum(losses_seen) / sum(sizes)\n",
        "model.train()\ntotal_loss = 0.0\ntotal_items = 0\niterator = iter(loader)\nwhile True:\n    try:\n"
        "        inputs, labels = next(iterator)\n    except StopIteration:\n        break\n"
        "    inputs = inputs.to(device=device, dtype=torch.float32)\n    labels = labels.to(device=device)\n"
        "    for p in model.parameters():\n        p.grad = None\n    predictions = model(inputs)\n"
        "    current = loss_fn(predictions, labels)\n    current.backward()\n    optimizer.step()\n"
        "    total_loss += current.item() * inputs.shape[0]\n    total_items += inputs.shape[0]\n"
        "return total_loss / total_items if total_items else 0.0\n",
        "model.train()\nsummed = torch.tensor(0.0)\ncount = 0\nfor x, y in loader:\n    x = x.to(device).to(torch.float32)\n"
        "    y = y.to(device)\n    optimizer.zero_grad()\n    value = loss_fn(model(x), y)\n    value.backward()\n"
        "    optimizer.step()\n    summed = summed + value.detach().cpu() * y.shape[0]\n    count = count + y.shape[0]\n"
        "return float(summed) / count if count > 0 else 0.0\n",
    ],
    "evaluate": [
        "previous_mode = model.training\nmodel.eval()\nloss_sum, hits, total = 0.0, 0, 0\nwith torch.no_grad():\n"
        "    for inputs, labels in loader:\n        inputs = inputs.to(device).float()\n        labels = labels.to(device)\n"
        "        scores = model(inputs)\n        loss_sum += loss_fn(scores, labels).item() * labels.shape[0]\n"
        "        hits += int((scores.argmax(1) == labels).sum())\n        total += labels.shape[0]\n"
        "model.train(previous_mode)\ntotal = max(total, 1)\nreturn {\"loss\": loss_sum / total, \"accuracy\": hits / total}\n",
        "mode_before = model.training\nmodel.eval()\nbatch_losses, batch_sizes, correct = [], [], 0\ntry:\n"
        "    with torch.no_grad():\n        for features, labels in loader:\n"
        "            features, labels = features.float().to(device), labels.to(device)\n            out = model(features)\n"
        "            batch_losses.append(loss_fn(out, labels).item())\n            batch_sizes.append(len(labels))\n"
        "            correct += (out.argmax(dim=-1) == labels).sum().item()\nfinally:\n    model.train(mode_before)\n"
        "n = sum(batch_sizes) or 1\nmean_loss = sum(l * s for l, s in zip(batch_losses, batch_sizes)) / n\n"
        "return {\"loss\": mean_loss, \"accuracy\": correct / n}\n",
        "was_training = model.training\nmodel.eval()\nresults = {\"loss\": 0.0, \"accuracy\": 0.0}\nseen = 0\n"
        "with torch.no_grad():\n    for data, truth in loader:\n        data = data.to(device, dtype=torch.float32)\n"
        "        truth = truth.to(device)\n        guess = model(data)\n        k = truth.numel()\n"
        "        results[\"loss\"] += float(loss_fn(guess, truth)) * k\n"
        "        results[\"accuracy\"] += float((guess.max(1).indices == truth).float().sum())\n        seen += k\n"
        "if was_training:\n    model.train()\nfor key in results:\n    results[key] /= max(seen, 1)\nreturn results\n",
        "state = model.training\nmodel.eval()\ntry:\n    with torch.no_grad():\n        pairs = [(model(a.to(device).float()), b.to(device)) for a, b in loader]\n"
        "finally:\n    model.train(state)\nif not pairs:\n    return {\"loss\": 0.0, \"accuracy\": 0.0}\n"
        "n = sum(len(b) for _, b in pairs)\nloss = sum(loss_fn(o, b).item() * len(b) for o, b in pairs) / n\n"
        "acc = sum((o.argmax(1) == b).sum().item() for o, b in pairs) / n\nreturn {\"loss\": loss, \"accuracy\": acc}\n",
    ],
    "fit": [
        "history = []\nbest = None\nbest_valid = float(\"inf\")\nwaited = 0\nfor epoch in range(epochs):\n"
        "    tl = train_one_epoch(model, train_loader, optimizer, loss_fn, device)\n"
        "    result = evaluate(model, valid_loader, loss_fn, device)\n"
        "    history.append({\"epoch\": epoch + 1, \"train_loss\": tl, \"valid_loss\": result[\"loss\"],\n"
        "                    \"valid_accuracy\": result[\"accuracy\"]})\n    if result[\"loss\"] < best_valid:\n"
        "        best_valid = result[\"loss\"]\n        best = {k: v.detach().clone() for k, v in model.state_dict().items()}\n"
        "        waited = 0\n    else:\n        waited += 1\n        if waited >= patience:\n            break\n"
        "if best is not None:\n    model.load_state_dict(best)\nreturn history\n",
        "records = []\nlowest = None\nsaved = copy.deepcopy(model.state_dict())\nbad_epochs = 0\nepoch = 0\n"
        "while epoch < epochs:\n    epoch += 1\n    train_loss = train_one_epoch(model, train_loader, optimizer, loss_fn, device)\n"
        "    scores = evaluate(model, valid_loader, loss_fn, device)\n"
        "    records.append(dict(epoch=epoch, train_loss=train_loss, valid_loss=scores[\"loss\"],\n"
        "                        valid_accuracy=scores[\"accuracy\"]))\n    if lowest is None or scores[\"loss\"] < lowest:\n"
        "        lowest, saved, bad_epochs = scores[\"loss\"], copy.deepcopy(model.state_dict()), 0\n        continue\n"
        "    bad_epochs += 1\n    if bad_epochs >= patience:\n        break\nmodel.load_state_dict(saved)\nreturn records\n",
        "log = []\nsnapshot = {name: t.clone() for name, t in model.state_dict().items()}\nbest_so_far = None\nstale = 0\n"
        "for e in range(1, epochs + 1):\n    row = {\"epoch\": e}\n"
        "    row[\"train_loss\"] = train_one_epoch(model, train_loader, optimizer, loss_fn, device)\n"
        "    valid = evaluate(model, valid_loader, loss_fn, device)\n    row[\"valid_loss\"] = valid[\"loss\"]\n"
        "    row[\"valid_accuracy\"] = valid[\"accuracy\"]\n    log.append(row)\n"
        "    if best_so_far is not None and valid[\"loss\"] >= best_so_far:\n        stale += 1\n"
        "        if stale == patience:\n            break\n        continue\n    best_so_far = valid[\"loss\"]\n    stale = 0\n"
        "    snapshot = {name: t.clone() for name, t in model.state_dict().items()}\nmodel.load_state_dict(snapshot)\nreturn log\n",
        "out = []\nkeep = copy.deepcopy(model.state_dict())\nmin_loss = float(\"inf\")\nno_gain = 0\nfor i in range(epochs):\n"
        "    train_loss = train_one_epoch(model, train_loader, optimizer, loss_fn, device)\n"
        "    v = evaluate(model, valid_loader, loss_fn, device)\n"
        "    out.append({\"epoch\": i + 1, \"train_loss\": train_loss, \"valid_loss\": v[\"loss\"], \"valid_accuracy\": v[\"accuracy\"]})\n"
        "    no_gain = 0 if v[\"loss\"] < min_loss else no_gain + 1\n    if no_gain == 0:\n        min_loss = v[\"loss\"]\n"
        "        keep = copy.deepcopy(model.state_dict())\n    elif no_gain >= patience:\n        break\n"
        "model.load_state_dict(keep)\nreturn out\n",
    ],
}
