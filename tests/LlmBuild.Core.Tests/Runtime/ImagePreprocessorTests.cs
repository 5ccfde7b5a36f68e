using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Models;
using LlmBuild.Core.Runtime;
using LlmBuild.Core.Tests.Checkpoints;
using LlmBuild.Core.Tests.Families;
using SkiaSharp;

namespace LlmBuild.Core.Tests.Runtime;

/// <summary>
/// The host's image preprocessing against Hugging Face's Qwen2VLImageProcessor (the fixture's pixel values) and its
/// resize against Pillow's own (python3-pil, the library the processor resizes with); bad images are coded errors.
/// </summary>
[TestClass]
public sealed class ImagePreprocessorTests
{
    private static (VisionLanguageTests.VlGolden Golden, ModelConfig Config) Fixture()
    {
        var golden = VisionLanguageTests.VlGolden.Load();
        return (golden, ModelConfig.Load(golden.Dir));
    }

    [TestMethod]
    public void FixtureImageGivesHuggingFacesPixelValues()
    {
        var (golden, config) = Fixture();
        var pre = ImagePreprocessor.Load(golden.Dir, config.Vision!, 0);
        PreprocessedImage image = pre.Process(Path.Combine(golden.Dir, "image-open.png"));
        Assert.AreEqual(golden.Grids[0], image.Grid);
        Assert.AreEqual(golden.PixelValues.Length, image.PixelValues.Length);
        double maxDiff = image.PixelValues.Zip(golden.PixelValues, (a, b) => Math.Abs(a - b)).Max();
        Console.WriteLine($"qwen2_vl: preprocessed pixel values vs Hugging Face max abs diff {maxDiff:E2} over {image.PixelValues.Length} values");
        Assert.IsTrue(maxDiff <= 1e-6, $"max abs diff {maxDiff}");
    }

    [TestMethod]
    public void BicubicResizeMatchesPillow()
    {
        var (golden, _) = Fixture();
        string png = Path.Combine(golden.Dir, "image-open.png");
        var (rgb, width, height) = ImagePreprocessor.Decode(File.ReadAllBytes(png), png);
        foreach (var (w, h) in new[] { (56, 28), (84, 140), (200, 150), (111, 83) })
        {
            string hex = TestFiles.RunPython(
                $"from PIL import Image\nim = Image.open({Quote(png)}).convert('RGB').resize(({w}, {h}), Image.BICUBIC)\nprint(im.tobytes().hex())").Trim();
            byte[] expected = Convert.FromHexString(hex);
            byte[] actual = PilBicubic.Resize(rgb, width, height, w, h);
            int differing = actual.Zip(expected, (a, b) => a != b ? 1 : 0).Sum();
            Assert.AreEqual(0, differing, $"{width}×{height} → {w}×{h}: {differing} of {expected.Length} bytes differ from Pillow");
        }
        static string Quote(string s) => "'" + s.Replace("\\", "\\\\").Replace("'", "\\'") + "'";
    }

    [TestMethod]
    public void SmartResizeFollowsHuggingFace()
    {
        var (golden, config) = Fixture();
        var pre = ImagePreprocessor.Load(golden.Dir, config.Vision!, 112 * 112);
        // Rounded to multiples of 28: 84×112 stays, 100×50 → 112×56 (Python rounds half to even: 50/28 = 1.79 → 2).
        Assert.AreEqual((84, 112), pre.SmartResize(84, 112));
        Assert.AreEqual((56, 112), pre.SmartResize(50, 100));
        // Above max_pixels (the vit's 112×112): scaled down keeping the aspect ratio, floored to multiples of 28.
        Assert.AreEqual((84, 140), pre.SmartResize(300, 500));
    }

    [TestMethod]
    public void ImagesLargerThanMaxPixelsAreResizedDownWithAWarning()
    {
        var (golden, config) = Fixture();
        var pre = ImagePreprocessor.Load(golden.Dir, config.Vision!, 112 * 112);
        byte[] png = EncodePng(300, 200);
        var warnings = new List<LlmBuildWarning>();
        PreprocessedImage image = pre.Process(png, "big.png", warnings);
        Assert.AreEqual(ErrorCodes.ImageResized, warnings.Single().Code);
        Assert.IsTrue((long)image.Width * image.Height <= 112 * 112, $"{image.Width}×{image.Height}");
        Assert.AreEqual((1, image.Height / 14, image.Width / 14), image.Grid);
        Assert.AreEqual(image.Grid.H * image.Grid.W * 1176, image.PixelValues.Length);
    }

    [TestMethod]
    public void CorruptOrUnsupportedImagesAreCodedErrors()
    {
        var (golden, config) = Fixture();
        var pre = ImagePreprocessor.Load(golden.Dir, config.Vision!, 0);
        byte[] png = File.ReadAllBytes(Path.Combine(golden.Dir, "image-open.png"));
        var random = new byte[4096];
        new Random(7).NextBytes(random);
        var cases = new (string Name, byte[] Bytes)[]
        {
            ("empty", []),
            ("random bytes", random),
            ("truncated png", png[..(png.Length / 2)]),
            ("png header only", png[..16]),
            ("text", "not an image at all"u8.ToArray()),
            ("tiny 1x1", EncodePng(1, 1)),
            ("flipped bits", png.Select((b, i) => i > 40 ? (byte)(b ^ 0x5A) : b).ToArray()),
        };
        foreach (var (name, bytes) in cases)
        {
            var e = Assert.ThrowsExactly<LlmBuildException>(() => pre.Process(bytes, name), name);
            Assert.AreEqual(ErrorCodes.BadImage, e.Code, $"{name}: {e.Message}");
        }
        var missing = Assert.ThrowsExactly<LlmBuildException>(() => pre.Process(Path.Combine(golden.Dir, "no-such-image.png")));
        Assert.AreEqual(ErrorCodes.BadImage, missing.Code);
    }

    [TestMethod]
    public void JpegDecodes()
    {
        var (golden, config) = Fixture();
        var pre = ImagePreprocessor.Load(golden.Dir, config.Vision!, 0);
        using var bitmap = Bitmap(56, 84);
        using var data = bitmap.Encode(SKEncodedImageFormat.Jpeg, 95);
        PreprocessedImage image = pre.Process(data.ToArray(), "photo.jpg");
        Assert.AreEqual((1, 6, 4), image.Grid);
    }

    private static SKBitmap Bitmap(int w, int h)
    {
        var bitmap = new SKBitmap(w, h, SKColorType.Rgba8888, SKAlphaType.Unpremul);
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) bitmap.SetPixel(x, y, new SKColor((byte)(x * 255 / w), (byte)(y * 255 / h), (byte)((x ^ y) & 255)));
        return bitmap;
    }

    private static byte[] EncodePng(int w, int h)
    {
        using var bitmap = Bitmap(w, h);
        using var data = bitmap.Encode(SKEncodedImageFormat.Png, 100);
        return data.ToArray();
    }

    [TestMethod]
    public void ABadPreprocessorConfigIsACodedError()
    {
        var (golden, config) = Fixture();
        string dir = TestFiles.TempDir();
        string text = File.ReadAllText(Path.Combine(golden.Dir, "preprocessor_config.json"));
        foreach (string bad in new[] { text.Replace("\"do_rescale\": true", "\"do_rescale\": \"yes\""), text.Replace("\"resample\": 3", "\"resample\": 2"),
                     text.Replace("\"image_mean\": [", "\"image_mean\": [1, ") })
        {
            File.WriteAllText(Path.Combine(dir, "preprocessor_config.json"), bad);
            var e = Assert.ThrowsExactly<LlmBuildException>(() => ImagePreprocessor.Load(dir, config.Vision!, 0).Process(Path.Combine(golden.Dir, "image-open.png")));
            Assert.AreEqual(ErrorCodes.BadPreprocessorConfig, e.Code, e.Message);
        }
        File.Delete(Path.Combine(dir, "preprocessor_config.json"));
        Assert.AreEqual(ErrorCodes.BadPreprocessorConfig, Assert.ThrowsExactly<LlmBuildException>(() => ImagePreprocessor.Load(dir, config.Vision!, 0)).Code);
    }
}
