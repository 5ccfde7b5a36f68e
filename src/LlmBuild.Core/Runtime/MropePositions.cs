using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Models;

namespace LlmBuild.Core.Runtime;

/// <summary>
/// The host side of M-RoPE (Qwen2-VL's get_rope_index): the 3-component positions (temporal, height, width) of a prompt
/// with images. Text tokens take the same position in all three, counting on from the largest position before them;
/// each image's merged tokens take (t, row, column) of its merged grid, offset by the position the image starts at.
/// Tokens generated after the prompt continue at cache position + <see cref="RopeDelta"/> in all three components.
/// </summary>
public sealed record MropePositions(int[] Positions, int Length, int RopeDelta)
{
    /// <summary>Component <paramref name="c"/> (0 temporal, 1 height, 2 width) of token <paramref name="t"/>.</summary>
    public int At(int c, int t) => Positions[c * Length + t];

    /// <summary>
    /// Positions [3, n] for <paramref name="ids"/>, where each image (grid t × h × w patches, in order) stands as
    /// t·h·w / merge² consecutive image-pad tokens.
    /// </summary>
    public static MropePositions Compute(ReadOnlySpan<int> ids, IReadOnlyList<(int T, int H, int W)> grids, VisionConfig vision)
    {
        int n = ids.Length, m = vision.SpatialMergeSize;
        var pos = new int[3 * n];
        int next = 0, t = 0;
        foreach (var (gt, gh, gw) in grids)
        {
            int start = t;
            while (t < n && ids[t] != vision.ImageTokenId) t++;
            for (int i = start; i < t; i++) pos[i] = pos[n + i] = pos[2 * n + i] = next++;
            int lh = gh / m, lw = gw / m, count = gt * lh * lw;
            if (t + count > n || !AllImage(ids.Slice(t, count), vision.ImageTokenId))
                throw new LlmBuildException(ErrorCodes.ImagePromptMismatch,
                    $"An image of grid {gt}×{gh}×{gw} needs {count} consecutive image-pad tokens ({vision.ImageTokenId}) in the prompt; the prompt has {CountImage(ids[start..], vision.ImageTokenId)} from position {start} on.");
            int top = 0;
            for (int f = 0; f < gt; f++)
                for (int y = 0; y < lh; y++)
                    for (int x = 0; x < lw; x++, t++)
                    {
                        pos[t] = next + f;
                        pos[n + t] = next + y;
                        pos[2 * n + t] = next + x;
                        top = Math.Max(top, Math.Max(f, Math.Max(y, x)));
                    }
            next += top + 1;
        }
        for (int i = t; i < n; i++)
        {
            if (ids[i] == vision.ImageTokenId)
                throw new LlmBuildException(ErrorCodes.ImagePromptMismatch,
                    $"The prompt has image-pad tokens ({vision.ImageTokenId}) at position {i} beyond the {grids.Count} image(s) given.");
            pos[i] = pos[n + i] = pos[2 * n + i] = next++;
        }
        int max = n == 0 ? -1 : pos.Max();
        return new MropePositions(pos, n, max + 1 - n);
    }

    /// <summary>Text-only positions: 0..n−1 in all three components, delta 0.</summary>
    public static MropePositions Text(int start, int n)
    {
        var pos = new int[3 * n];
        for (int c = 0; c < 3; c++) for (int i = 0; i < n; i++) pos[c * n + i] = start + i;
        return new MropePositions(pos, n, 0);
    }

    private static bool AllImage(ReadOnlySpan<int> ids, int image)
    {
        foreach (int id in ids) if (id != image) return false;
        return true;
    }

    private static int CountImage(ReadOnlySpan<int> ids, int image)
    {
        int count = 0;
        foreach (int id in ids) if (id == image) count++;
        return count;
    }
}
