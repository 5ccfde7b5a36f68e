using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.IO;
using LlmBuild.Core.Models;
using LlmBuild.Core.Numerics;
using LlmBuild.Core.Plan;

namespace LlmBuild.Core.Quantization;

/// <summary>
/// EmbeddingDisk: instead of embedding nets the runtime reads <c>config/embedding.bin</c>, the raw [vocab, hidden]
/// table in the activation dtype (bf16, f16 or f32, little-endian, row-major, no header), and embeds on the CPU.
/// </summary>
public static class EmbeddingBin
{

    public static void Write(ICheckpoint checkpoint, ResolvedModel model, string path)
    {
        string tensor = model.ModelFamily.TensorName(WeightRole.Embedding);
        TensorInfo info = checkpoint.GetInfo(tensor);
        long vocab = model.Config.VocabSize, hidden = model.Config.HiddenSize;
        if (!info.Shape.AsSpan().SequenceEqual([vocab, hidden]))
            throw new LlmBuildException(ErrorCodes.GraphBadShape,
                $"Embedding '{tensor}' has shape [{string.Join(",", info.Shape)}], config.json implies [{vocab},{hidden}].");
        bool bf16 = model.ActivationDtype == "bf16";
        AtomicFile.Write(path, stream =>
        {
            const int RowsPerBlock = 1024;
            var floats = new float[RowsPerBlock * hidden];
            var bits = new ushort[RowsPerBlock * hidden];
            for (long row = 0; row < vocab; row += RowsPerBlock)
            {
                int count = (int)(Math.Min(RowsPerBlock, vocab - row) * hidden);
                checkpoint.ReadFloat32(tensor, row * hidden, floats.AsSpan(0, count));
                if (model.ActivationDtype == "f32")
                {
                    NonFiniteCheck.Float32(floats.AsSpan(0, count), tensor, info.Shape, row * hidden, info.File);
                    stream.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(floats.AsSpan(0, count)));
                    continue;
                }
                if (bf16) FloatFormats.FloatToBFloat16(floats.AsSpan(0, count), bits.AsSpan(0, count));
                else FloatFormats.FloatToHalf(floats.AsSpan(0, count), bits.AsSpan(0, count));
                NonFiniteCheck.Bits16(bits.AsSpan(0, count), bf16 ? TensorDType.BF16 : TensorDType.F16, tensor, info.Shape, row * hidden, info.File);
                stream.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(bits.AsSpan(0, count)));
            }
        });
    }
}
