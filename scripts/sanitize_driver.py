"""Calls every CUDA kernel once on small odd shapes, forward and backward, for compute-sanitizer
(memcheck / racecheck) in scripts/gpu_check.sh. Each op family registers a function below."""
import torch
import torch.nn.functional as F

import rnnkern
import rnnkern.functional as RF


def unpool(dev):
    for fmt in (torch.contiguous_format, torch.channels_last):
        for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
            x = torch.randn(2, 3, 9, 11, device=dev, dtype=dtype).contiguous(memory_format=fmt)
            for k, s, p in ((2, 2, 0), (3, 2, 1)):
                pooled, idx = F.max_pool2d(x, k, s, p, return_indices=True)
                pooled.requires_grad_()
                y = RF.max_unpool2d(pooled, idx, k, s, p, output_size=x.shape[-2:])
                y.backward(torch.randn_like(y))
            z = x.requires_grad_()
            RF.unpool_nearest2d(z, 2).sum().backward()
            RF.bed_of_nails2d(z, 3).sum().backward()
            # hand-built indices outside their window: the scatter fallback
            pooled = torch.randn(2, 3, 4, 5, device=dev, dtype=dtype)
            idx = torch.randperm(8 * 10, device=dev)[:20].view(4, 5).expand(2, 3, 4, 5).contiguous()
            RF.max_unpool2d(pooled, idx, 2)


def rnn(dev):
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        for nl in ("tanh", "relu"):
            m = rnnkern.nn.RNN(7, 33, num_layers=2, nonlinearity=nl, bidirectional=True).to(dev, dtype)
            x = torch.randn(9, 5, 7, device=dev, dtype=dtype, requires_grad=True)
            out, h = m(x)
            (out.float().sum() + h.float().sum()).backward()
        lengths = torch.tensor([9, 6, 6, 2, 1])
        packed = torch.nn.utils.rnn.pack_padded_sequence(x.detach(), lengths)
        m(packed)[0].data.float().sum().backward()


CHECKS = [unpool, rnn]

if __name__ == "__main__":
    for check in CHECKS:
        check("cuda")
        torch.cuda.synchronize()
        print(f"sanitize: {check.__name__} ok")
