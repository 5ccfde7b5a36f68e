using System.Runtime.InteropServices;

namespace LlmBuild.Core.IO;

/// <summary>
/// How many names a file has. A file changed in place (<see cref="AtomicFile.Rewrite"/>) changes under every one of
/// them, where a file written anew and renamed into place leaves the others alone: a caller rewrites in place only a
/// file with one name.
/// </summary>
public static class HardLinks
{
    /// <summary>The link count of the file at <paramref name="path"/> (links followed), or -1 when it cannot be told (not Linux, no statx, an error).</summary>
    public static int Count(string path)
    {
        if (!OperatingSystem.IsLinux()) return -1;
        // struct statx has one layout on every Linux architecture: stx_nlink is the u32 at byte 16 (glibc 2.28+).
        Span<byte> buffer = stackalloc byte[256];
        try
        {
            unsafe
            {
                fixed (byte* b = buffer)
                    if (Statx(AtCurrentDirectory, path, 0, StatxNlink, b) != 0) return -1;
            }
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return -1;
        }
        if ((BitConverter.ToUInt32(buffer) & StatxNlink) == 0) return -1;
        return (int)Math.Min(BitConverter.ToUInt32(buffer[16..]), int.MaxValue);
    }

    private const int AtCurrentDirectory = -100;
    private const uint StatxNlink = 0x4;

    [DllImport("libc", EntryPoint = "statx", SetLastError = true)]
    private static extern unsafe int Statx(int dirfd, [MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags, uint mask, byte* buffer);
}
