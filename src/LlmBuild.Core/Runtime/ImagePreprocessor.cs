using System.Text.Json.Nodes;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Models;
using SkiaSharp;

namespace LlmBuild.Core.Runtime;

/// <summary>An image as the vit net's host side needs it: patches [t·h·w, C·T·P·P] in Hugging Face's order and the grid.</summary>
public sealed record PreprocessedImage(float[] PixelValues, (int T, int H, int W) Grid, int SourceWidth, int SourceHeight, int Width, int Height)
{
    /// <summary>The merged image tokens the image takes in the prompt.</summary>
    public int Tokens(VisionConfig v) => Grid.T * Grid.H * Grid.W / v.MergeArea;
}

/// <summary>
/// Qwen2-VL's image processor on the host, in C# (DESIGN §13): decode (PNG, JPEG and what else Skia reads) to RGB,
/// smart_resize to multiples of patch × merge within [min_pixels, max_pixels] (max_pixels also bounded by the vit net's
/// MaxPixels, with a warning when the image is scaled down), a resize with PIL's bicubic filter (antialiased when
/// shrinking, 8-bit fixed point, as Hugging Face's processor resizes through PIL), rescale and normalise with
/// preprocessor_config.json's factors, and the patches in the processor's order (frames, merge windows, patches; each row
/// channels × temporal copies × patch rows × patch columns). Bad images are coded errors (LLMB0143), never crashes.
/// </summary>
public sealed class ImagePreprocessor
{
    /// <summary>The largest image file or decoded image accepted (guards against decompression bombs).</summary>
    public const long MaxFileBytes = 256L << 20;
    public const long MaxDecodedPixels = 1L << 28;

    private readonly VisionConfig _v;

    public ImagePreprocessor(VisionConfig vision, double[] mean, double[] std, double rescale, long minPixels, long maxPixels)
    {
        _v = vision;
        Mean = mean;
        Std = std;
        RescaleFactor = rescale;
        MinPixels = minPixels;
        MaxPixels = maxPixels;
    }

    public double[] Mean { get; }
    public double[] Std { get; }
    public double RescaleFactor { get; }
    public long MinPixels { get; }
    public long MaxPixels { get; }

    /// <summary>
    /// Reads preprocessor_config.json from <paramref name="configDir"/>; <paramref name="netMaxPixels"/> (the vit net's
    /// W·H, 0 = none) caps its max_pixels.
    /// </summary>
    public static ImagePreprocessor Load(string configDir, VisionConfig vision, long netMaxPixels)
    {
        string path = Path.Combine(configDir, "preprocessor_config.json");
        if (!File.Exists(path))
            throw new LlmBuildException(ErrorCodes.BadPreprocessorConfig, $"'{path}' does not exist; a vision-language model needs its image processor's preprocessor_config.json beside config.json.", path);
        JsonObject o = ModelConfig.ParseObject(path);
        double[] Triple(string field) => o[field] is JsonArray a && a.Count == 3 && a.All(n => n is JsonValue v && v.TryGetValue(out double _))
            ? a.Select(n => (double)n!).ToArray()
            : throw new LlmBuildException(ErrorCodes.BadPreprocessorConfig, $"{path}: \"{field}\" must be three numbers (one per RGB channel).", path);
        double Number(JsonObject from, string field, double fallback) => from[field] is null ? fallback
            : from[field] is JsonValue v && v.TryGetValue(out double d) && d > 0 ? d
            : throw new LlmBuildException(ErrorCodes.BadPreprocessorConfig, $"{path}: \"{field}\" is {from[field]!.ToJsonString()}, expected a positive number.", path);
        if (o["patch_size"] is JsonValue ps && ps.TryGetValue(out int patch) && patch != vision.PatchSize
            || o["merge_size"] is JsonValue ms && ms.TryGetValue(out int merge) && merge != vision.SpatialMergeSize
            || o["temporal_patch_size"] is JsonValue ts && ts.TryGetValue(out int temporal) && temporal != vision.TemporalPatchSize)
            throw new LlmBuildException(ErrorCodes.BadPreprocessorConfig, $"{path}: patch_size / merge_size / temporal_patch_size disagree with config.json's vision_config.", path);
        if (o["resample"] is JsonValue rs && rs.TryGetValue(out int resample) && resample != 3)
            throw new LlmBuildException(ErrorCodes.BadPreprocessorConfig, $"{path}: resample {resample} is not supported (3, bicubic).", path);
        JsonObject size = o["size"] as JsonObject ?? new JsonObject();
        double min = Number(o, "min_pixels", Number(size, "min_pixels", Number(size, "shortest_edge", 56 * 56)));
        double max = Number(o, "max_pixels", Number(size, "max_pixels", Number(size, "longest_edge", 28 * 28 * 1280)));
        bool Flag(string field) => o[field] is null || (o[field] is JsonValue f && f.TryGetValue(out bool b)
            ? b : throw new LlmBuildException(ErrorCodes.BadPreprocessorConfig, $"{path}: \"{field}\" is {o[field]!.ToJsonString()}, expected true or false.", path));
        bool rescale = Flag("do_rescale");
        bool normalize = Flag("do_normalize");
        return new ImagePreprocessor(vision,
            normalize ? Triple("image_mean") : [0, 0, 0], normalize ? Triple("image_std") : [1, 1, 1],
            rescale ? Number(o, "rescale_factor", 1 / 255.0) : 1.0, (long)min, netMaxPixels > 0 ? Math.Min((long)max, netMaxPixels) : (long)max);
    }

    /// <summary>Decodes and preprocesses an image file.</summary>
    public PreprocessedImage Process(string path, ICollection<LlmBuildWarning>? warnings = null)
    {
        byte[] bytes;
        try
        {
            var info = new FileInfo(path);
            if (!info.Exists) throw new LlmBuildException(ErrorCodes.BadImage, $"Image '{path}' does not exist.", path);
            if (info.Length > MaxFileBytes) throw new LlmBuildException(ErrorCodes.BadImage, $"Image '{path}' is {info.Length >> 20} MiB; at most {MaxFileBytes >> 20} MiB is read.", path);
            bytes = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new LlmBuildException(ErrorCodes.BadImage, $"Image '{path}' cannot be read: {e.Message}", path, e);
        }
        return Process(bytes, path, warnings);
    }

    /// <summary>Decodes and preprocesses image bytes; <paramref name="name"/> names the image in errors and warnings.</summary>
    public PreprocessedImage Process(byte[] bytes, string name, ICollection<LlmBuildWarning>? warnings = null)
    {
        var (rgb, width, height) = Decode(bytes, name);
        var (h, w) = SmartResize(height, width, name);
        if ((long)width * height > MaxPixels && warnings is not null)
            warnings.Add(new LlmBuildWarning(ErrorCodes.ImageResized,
                $"Image '{name}' ({width}×{height}) is larger than max_pixels {MaxPixels}; it is resized down to {w}×{h}. Rebuild with a larger MaxPixels to keep more detail."));
        if (w != width || h != height) rgb = PilBicubic.Resize(rgb, width, height, w, h);
        return new PreprocessedImage(Patchify(rgb, w, h), (1, h / _v.PatchSize, w / _v.PatchSize), width, height, w, h);
    }

    /// <summary>
    /// Hugging Face's smart_resize: each side rounded to a multiple of patch × merge, then scaled (keeping the aspect
    /// ratio) into [min_pixels, max_pixels].
    /// </summary>
    public (int Height, int Width) SmartResize(int height, int width, string name = "image")
    {
        int factor = _v.PixelUnit;
        if (height < factor || width < factor)
            throw new LlmBuildException(ErrorCodes.BadImage, $"Image '{name}' is {width}×{height}; both sides must be at least {factor} pixels.", name);
        if ((double)Math.Max(height, width) / Math.Min(height, width) > 200)
            throw new LlmBuildException(ErrorCodes.BadImage, $"Image '{name}' is {width}×{height}; an aspect ratio above 200 is refused (as Hugging Face's processor does).", name);
        long hBar = (long)Math.Round((double)height / factor, MidpointRounding.ToEven) * factor;
        long wBar = (long)Math.Round((double)width / factor, MidpointRounding.ToEven) * factor;
        if (hBar * wBar > MaxPixels)
        {
            double beta = Math.Sqrt((double)height * width / MaxPixels);
            hBar = Math.Max(factor, (long)Math.Floor(height / beta / factor) * factor);
            wBar = Math.Max(factor, (long)Math.Floor(width / beta / factor) * factor);
        }
        else if (hBar * wBar < MinPixels)
        {
            double beta = Math.Sqrt((double)MinPixels / ((double)height * width));
            hBar = (long)Math.Ceiling(height * beta / factor) * factor;
            wBar = (long)Math.Ceiling(width * beta / factor) * factor;
        }
        return ((int)hBar, (int)wBar);
    }

    /// <summary>RGB bytes (row-major, 3 per pixel) of an image file's first frame; alpha is dropped as PIL's convert("RGB") does.</summary>
    public static (byte[] Rgb, int Width, int Height) Decode(byte[] bytes, string name)
    {
        try
        {
            using var codec = SKCodec.Create(new SKMemoryStream(bytes))
                ?? throw new LlmBuildException(ErrorCodes.BadImage, $"Image '{name}' is not in a format LlmBuild decodes (PNG, JPEG, WebP, GIF, BMP), or it is corrupt.", name);
            SKImageInfo info = codec.Info;
            if (info.Width <= 0 || info.Height <= 0 || (long)info.Width * info.Height > MaxDecodedPixels)
                throw new LlmBuildException(ErrorCodes.BadImage, $"Image '{name}' declares {info.Width}×{info.Height} pixels; at most {MaxDecodedPixels} are decoded.", name);
            var target = new SKImageInfo(info.Width, info.Height, SKColorType.Rgba8888, SKAlphaType.Unpremul);
            using var bitmap = new SKBitmap(target);
            SKCodecResult result = codec.GetPixels(target, bitmap.GetPixels());
            if (result is not (SKCodecResult.Success or SKCodecResult.IncompleteInput))
                throw new LlmBuildException(ErrorCodes.BadImage, $"Image '{name}' cannot be decoded ({result}); the file is corrupt or unsupported.", name);
            if (result == SKCodecResult.IncompleteInput)
                throw new LlmBuildException(ErrorCodes.BadImage, $"Image '{name}' is truncated (its data ends before the last row).", name);
            ReadOnlySpan<byte> rgba = bitmap.GetPixelSpan();
            var rgb = new byte[(long)info.Width * info.Height * 3];
            for (long i = 0, n = (long)info.Width * info.Height; i < n; i++)
            {
                rgb[3 * i] = rgba[(int)(4 * i)];
                rgb[3 * i + 1] = rgba[(int)(4 * i + 1)];
                rgb[3 * i + 2] = rgba[(int)(4 * i + 2)];
            }
            return (rgb, info.Width, info.Height);
        }
        catch (LlmBuildException) { throw; }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or OutOfMemoryException or NotSupportedException or IOException)
        {
            throw new LlmBuildException(ErrorCodes.BadImage, $"Image '{name}' cannot be decoded: {e.Message}", name, e);
        }
    }

    /// <summary>
    /// Rescale (in double, then f32, as numpy does), normalise in f32 per channel, and lay the patches out as the
    /// processor does: rows (frame, merge-window row, merge-window column, row in window, column in window), columns
    /// (channel, temporal copy, pixel row, pixel column); the single frame repeated temporal_patch_size times.
    /// </summary>
    public float[] Patchify(byte[] rgb, int width, int height)
    {
        int p = _v.PatchSize, m = _v.SpatialMergeSize, tp = _v.TemporalPatchSize, c = _v.InChannels;
        if (c != 3) throw new LlmBuildException(ErrorCodes.BadPreprocessorConfig, $"vision_config in_chans {c}: only RGB (3) images are supported.");
        int gh = height / p, gw = width / p;
        var normalized = new float[(long)width * height * 3];
        var mean = Mean.Select(x => (float)x).ToArray();
        var std = Std.Select(x => (float)x).ToArray();
        for (long i = 0; i < normalized.Length; i++)
        {
            float x = (float)(rgb[i] * RescaleFactor);
            normalized[i] = (x - mean[i % 3]) / std[i % 3];
        }
        int dim = _v.PatchDim;
        var output = new float[(long)gh * gw * dim];
        long row = 0;
        for (int bh = 0; bh < gh / m; bh++)
            for (int bw = 0; bw < gw / m; bw++)
                for (int mh = 0; mh < m; mh++)
                    for (int mw = 0; mw < m; mw++, row++)
                    {
                        int y0 = (bh * m + mh) * p, x0 = (bw * m + mw) * p;
                        long at = row * dim;
                        for (int ch = 0; ch < 3; ch++)
                            for (int t = 0; t < tp; t++)
                                for (int py = 0; py < p; py++)
                                    for (int px = 0; px < p; px++)
                                        output[at++] = normalized[((long)(y0 + py) * width + x0 + px) * 3 + ch];
                    }
        return output;
    }
}

/// <summary>
/// PIL's bicubic resize of 8-bit RGB (Image.resize(size, BICUBIC)): the cubic convolution filter with a = −0.5, its
/// support widened by the scale when shrinking (antialiasing), coefficients normalised then held in 22-bit fixed point,
/// a horizontal pass then a vertical pass, each rounding and clamping to 8 bits.
/// </summary>
public static class PilBicubic
{
    private const int PrecisionBits = 32 - 8 - 2;

    public static byte[] Resize(byte[] rgb, int width, int height, int newWidth, int newHeight)
    {
        byte[] horizontal = newWidth == width ? rgb : Pass(rgb, width, height, newWidth, horizontal: true);
        return newHeight == height ? horizontal : Pass(horizontal, newWidth, height, newHeight, horizontal: false);
    }

    private static double Filter(double x)
    {
        const double a = -0.5;
        x = Math.Abs(x);
        if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
        if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
        return 0;
    }

    /// <summary>Per output pixel: the first input pixel and the fixed-point weights.</summary>
    private static (int[] Start, int[][] Weights) Coefficients(int inSize, int outSize)
    {
        double scale = (double)inSize / outSize, filterScale = Math.Max(scale, 1.0), support = 2.0 * filterScale;
        var starts = new int[outSize];
        var weights = new int[outSize][];
        for (int xx = 0; xx < outSize; xx++)
        {
            double center = (xx + 0.5) * scale, ss = 1.0 / filterScale;
            int xmin = Math.Max((int)(center - support + 0.5), 0);
            int xmax = Math.Min((int)(center + support + 0.5), inSize) - xmin;
            var k = new double[xmax];
            double ww = 0;
            for (int x = 0; x < xmax; x++) { k[x] = Filter((x + xmin - center + 0.5) * ss); ww += k[x]; }
            var fixedK = new int[xmax];
            for (int x = 0; x < xmax; x++)
            {
                double v = ww != 0 ? k[x] / ww : k[x];
                fixedK[x] = v < 0 ? (int)(-0.5 + v * (1 << PrecisionBits)) : (int)(0.5 + v * (1 << PrecisionBits));
            }
            starts[xx] = xmin;
            weights[xx] = fixedK;
        }
        return (starts, weights);
    }

    private static byte Clip8(long value) =>
        value >= (1L << PrecisionBits) << 8 ? (byte)255 : value <= 0 ? (byte)0 : (byte)(value >> PrecisionBits);

    private static byte[] Pass(byte[] src, int width, int height, int outSize, bool horizontal)
    {
        int inSize = horizontal ? width : height;
        var (start, weights) = Coefficients(inSize, outSize);
        int ow = horizontal ? outSize : width, oh = horizontal ? height : outSize;
        var dst = new byte[(long)ow * oh * 3];
        Parallel.For(0, oh, y =>
        {
            for (int x = 0; x < ow; x++)
            {
                int o = horizontal ? x : y;
                int[] k = weights[o];
                for (int ch = 0; ch < 3; ch++)
                {
                    long ss = 1L << (PrecisionBits - 1);
                    for (int i = 0; i < k.Length; i++)
                    {
                        int sx = horizontal ? start[o] + i : x, sy = horizontal ? y : start[o] + i;
                        ss += src[((long)sy * width + sx) * 3 + ch] * (long)k[i];
                    }
                    dst[((long)y * ow + x) * 3 + ch] = Clip8(ss);
                }
            }
        });
        return dst;
    }
}
