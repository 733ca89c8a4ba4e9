namespace Fvd.Integration.Tests; public class IntegrationPlaceholder { }
