namespace Fvd.Fuse.Tests; public class FuseTestsPlaceholder { }
