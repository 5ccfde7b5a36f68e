using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Models;

namespace LlmBuild.Core.Runtime;

/// <summary>
/// What the host feeds one run of the <c>vit</c> net for one image (DESIGN §13): the patches padded to the net's N rows,
/// the 2-D rotary position ids [N, 2] (height, width of each patch in the processor's merge-window order), the
/// attention mask [N, N] (0 among the image's patches, the mask fill elsewhere) and, with window attention
/// (Qwen2.5-VL), the patches reordered window by window, the window mask and the reverse index [N / merge²] that puts
/// the merged rows back in raster order. <see cref="Tokens"/> rows of the output are the image's embeddings.
/// </summary>
public sealed record VisionInputs(float[] Patches, int[] PositionIds, float[] FullMask, float[]? WindowMask, int[]? ReverseIndex, int Tokens)
{
    /// <summary>Prepares an image's patches ([t·h·w, C·T·P·P] in the processor's order) for a vit net of <paramref name="netPatches"/> rows.</summary>
    public static VisionInputs Prepare(float[] pixelValues, (int T, int H, int W) grid, VisionConfig v, int netPatches)
    {
        int m = v.SpatialMergeSize, unit = v.MergeArea, dim = v.PatchDim;
        int n = grid.T * grid.H * grid.W, tokens = n / unit;
        if (pixelValues.Length != (long)n * dim)
            throw new LlmBuildException(ErrorCodes.ImagePromptMismatch, $"{pixelValues.Length} pixel values are not the {n} patches of [{dim}] an image grid {grid.T}×{grid.H}×{grid.W} has.");
        if (n > netPatches)
            throw new LlmBuildException(ErrorCodes.ImagePromptMismatch,
                $"An image of {n} patches ({grid.H * v.PatchSize}×{grid.W * v.PatchSize} px) does not fit the vit net's {netPatches} patches (MaxPixels). Resize it down or rebuild with a larger MaxPixels.");
        var pos = new (int H, int W)[n];
        int at = 0;
        for (int f = 0; f < grid.T; f++)
            for (int bh = 0; bh < grid.H / m; bh++)
                for (int bw = 0; bw < grid.W / m; bw++)
                    for (int i = 0; i < m; i++)
                        for (int j = 0; j < m; j++) pos[at++] = (bh * m + i, bw * m + j);

        // Window attention: merged tokens reordered window by window; the window each patch is in, for the mask.
        int[] order = Enumerable.Range(0, tokens).ToArray();
        int[] window = new int[n];
        if (v.UsesWindows)
        {
            int side = v.WindowSize / m / v.PatchSize, lh = grid.H / m, lw = grid.W / m, id = 0;
            var list = new List<int>();
            for (int f = 0; f < grid.T; f++)
                for (int wy = 0; wy < lh; wy += side)
                    for (int wx = 0; wx < lw; wx += side, id++)
                        for (int y = wy; y < Math.Min(wy + side, lh); y++)
                            for (int x = wx; x < Math.Min(wx + side, lw); x++)
                            {
                                for (int u = 0; u < unit; u++) window[list.Count * unit + u] = id;
                                list.Add(f * lh * lw + y * lw + x);
                            }
            order = list.ToArray();
        }
        var patches = new float[(long)netPatches * dim];
        var ids = new int[netPatches * 2];
        for (int r = 0; r < tokens; r++)
            for (int u = 0; u < unit; u++)
            {
                int source = order[r] * unit + u, row = r * unit + u;
                pixelValues.AsSpan(source * dim, dim).CopyTo(patches.AsSpan(row * dim));
                ids[2 * row] = pos[source].H;
                ids[2 * row + 1] = pos[source].W;
            }
        int frame = grid.H * grid.W;
        float[] full = Mask(netPatches, n, (i, j) => i / frame == j / frame);
        float[]? windowMask = v.UsesWindows ? Mask(netPatches, n, (i, j) => window[i] == window[j]) : null;
        int[]? reverse = null;
        if (v.UsesWindows)
        {
            reverse = Enumerable.Range(0, netPatches / unit).ToArray();
            for (int r = 0; r < tokens; r++) reverse[order[r]] = r;
        }
        return new VisionInputs(patches, ids, full, windowMask, reverse, tokens);
    }

    /// <summary>[N, N]: 0 where both patches are real and <paramref name="visible"/>, the mask fill elsewhere; a padding
    /// row sees only itself (its output is discarded).</summary>
    private static float[] Mask(int size, int real, Func<int, int, bool> visible)
    {
        var mask = new float[(long)size * size];
        Array.Fill(mask, NetContract.MaskFill);
        for (int i = 0; i < size; i++)
        {
            if (i >= real) { mask[(long)i * size + i] = 0; continue; }
            for (int j = 0; j < real; j++) if (visible(i, j)) mask[(long)i * size + j] = 0;
        }
        return mask;
    }
}
