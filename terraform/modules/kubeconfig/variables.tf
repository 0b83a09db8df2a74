variable "cluster_name" {
  type        = string
  description = "Name used for the kubeconfig's cluster, user and context entries."
}

variable "host" {
  type        = string
  description = "HTTPS address of the Kubernetes API server."
}

variable "cluster_ca_certificate" {
  type        = string
  description = "PEM-encoded CA certificate of the API server."
}

variable "exec_auth" {
  type = object({
    api_version = string
    command     = string
    args        = list(string)
  })
  description = "The client-go credential plugin that fetches a short-lived token (aws, gke-gcloud-auth-plugin, kubelogin)."
}
