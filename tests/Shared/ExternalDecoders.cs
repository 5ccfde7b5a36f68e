using System.Diagnostics;
using Microsoft.VisualStudio.TestTools.UnitTesting;

namespace LlmBuild.Tests;

/// <summary>
/// The Debian tools some tests use as independent decoders of LlmBuild's outputs: mlir-opt-16 (MLIR), flatc (bmodel
/// flatbuffers) and python3 with numpy (npz/npy, reference tokenizers). A test that needs one and does not find it
/// fails, saying how to get it: a missing decoder must never look like a pass. ./test.sh installs them.
/// </summary>
public static class ExternalDecoders
{
    public const string MlirOptPath = "/usr/bin/mlir-opt-16";
    public const string FlatcPath = "/usr/bin/flatc";
    public const string Python3Path = "/usr/bin/python3";

    /// <summary>mlir-opt-16's path (Debian package mlir-16-tools).</summary>
    public static string MlirOpt() => Require(MlirOptPath, "mlir-16-tools");

    /// <summary>flatc's path (Debian package flatbuffers-compiler).</summary>
    public static string Flatc() => Require(FlatcPath, "flatbuffers-compiler");

    /// <summary>python3's path (Debian package python3; python3-numpy brings it).</summary>
    public static string Python3() => Require(Python3Path, "python3-numpy");

    private static readonly Lazy<bool> NumpyImports = new(() =>
    {
        var psi = new ProcessStartInfo(Python3Path, ["-c", "import numpy"]) { RedirectStandardError = true, RedirectStandardOutput = true };
        using var p = Process.Start(psi)!;
        p.StandardOutput.ReadToEnd();
        p.StandardError.ReadToEnd();
        p.WaitForExit();
        return p.ExitCode == 0;
    });

    /// <summary>python3's path, once numpy imports in it (Debian package python3-numpy).</summary>
    public static string Python3WithNumpy()
    {
        string python = Python3();
        if (!NumpyImports.Value) Assert.Fail(Missing("numpy for " + Python3Path, "python3-numpy"));
        return python;
    }

    internal static string Require(string path, string package)
    {
        if (!File.Exists(path)) Assert.Fail(Missing(path, package));
        return path;
    }

    private static string Missing(string what, string package) =>
        $"{what} is not installed; this test uses it as an independent decoder. Run ./test.sh from the repository root " +
        $"(it installs the decoders the tests need, then runs them) or `sudo apt-get install {package}`.";
}
